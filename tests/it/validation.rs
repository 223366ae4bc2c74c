//! Invalid events: each fails with a message naming the problem and writes nothing.
