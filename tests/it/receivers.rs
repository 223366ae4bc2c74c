//! Receivers that misbehave: every way ends in the retry schedule with a specific reason.
