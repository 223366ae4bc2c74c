//! How many deliveries one webhook may have in flight, adapted to how it
//! answers (additive increase, multiplicative decrease). Pure.
//!
//! A fixed cap must choose between isolation and speed: small, and one fast
//! receiver cannot be fed quickly; large, and a hanging one holds many slots
//! for the whole response timeout. So each webhook starts small, gains one
//! slot per quick success up to `--max-in-flight-per-webhook`, and halves on
//! every sign of trouble: timeouts, connection failures, 429 and 503.

use std::time::Duration;

/// Limits of the adaptation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingConfig {
    /// Slots of a webhook not seen before.
    pub start: usize,
    /// Never fewer than this (at least 1, so every webhook makes progress).
    pub min: usize,
    /// Never more than this: `--max-in-flight-per-webhook`.
    pub max: usize,
    /// A webhook with nothing in flight for this long is forgotten (it
    /// starts again from `start`), and so is what else is kept per webhook.
    pub forget_after: Duration,
}

/// How long a webhook's state outlives its last delivery. Long enough that a
/// webhook with steady traffic keeps what it learned between bursts (and its
/// signer is read from the database at most once per quiet spell); short
/// enough that thousands of webhooks that went quiet, or were revoked or
/// disabled, hold nothing within a minute. Forgetting costs little: a
/// forgotten webhook starts again from `start` slots, and a struggling one
/// halves back down on its first failure.
pub const FORGET_AFTER_DEFAULT: Duration = Duration::from_secs(30);

impl PacingConfig {
    /// Starts at 8 (or `max` if smaller) and never drops below 1.
    pub fn up_to(max: usize) -> Self {
        let max = max.max(1);
        PacingConfig {
            start: 8.min(max),
            min: 1,
            max,
            forget_after: FORGET_AFTER_DEFAULT,
        }
    }
}

/// What an attempt says about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A success that came back quickly: room for one more.
    Fast,
    /// Says nothing about capacity (a slow success, a 4xx, a TLS error).
    Neutral,
    /// The receiver is struggling or unreachable: back off.
    Struggling,
}

/// One webhook's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Being sent now.
    pub sending: usize,
    /// May be sent at once.
    pub limit: usize,
}

impl Pace {
    /// A webhook not seen before.
    pub fn new(config: &PacingConfig) -> Self {
        Pace {
            sending: 0,
            limit: config.start,
        }
    }

    /// Free slots.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.sending)
    }

    /// One delivery finished with this feedback.
    pub fn finished(&mut self, feedback: Feedback, config: &PacingConfig) {
        self.sending = self.sending.saturating_sub(1);
        self.limit = match feedback {
            Feedback::Fast => (self.limit + 1).min(config.max),
            Feedback::Neutral => self.limit,
            Feedback::Struggling => (self.limit / 2).max(config.min),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_receiver_earns_slots_up_to_the_maximum() {
        let config = PacingConfig::up_to(32);
        let mut pace = Pace::new(&config);
        assert_eq!(pace.limit, 8);
        for _ in 0..100 {
            pace.sending += 1;
            pace.finished(Feedback::Fast, &config);
        }
        assert_eq!(pace.limit, 32);
    }

    #[test]
    fn trouble_halves_the_slots_but_never_below_one() {
        let config = PacingConfig::up_to(64);
        let mut pace = Pace {
            sending: 5,
            limit: 40,
        };
        pace.finished(Feedback::Struggling, &config);
        assert_eq!(pace.limit, 20);
        for _ in 0..10 {
            pace.finished(Feedback::Struggling, &config);
        }
        assert_eq!(pace.limit, 1);
        assert_eq!(pace.sending, 0);
        pace.finished(Feedback::Neutral, &config);
        assert_eq!(pace.limit, 1);
    }

    #[test]
    fn a_small_maximum_caps_the_start() {
        assert_eq!(PacingConfig::up_to(3).start, 3);
        assert_eq!(PacingConfig::up_to(0).max, 1);
    }
}
