//! The retry schedule (docs/CONTRACT.md §3). Pure.
//!
//! After failed attempt *k* the next one is due at failure time +
//! base × 2^(k−1), plus an add-only jitter of at most 10 % so that a burst of
//! failures to one receiver does not come back as one burst. A 429 or 503
//! answer's `Retry-After` can only push that later, up to
//! `--max-retry-after` away; it never brings an attempt forward nor adds one.

use std::time::Duration;

use rand::Rng;

/// Default base delay: 60 s, so retries come after 60 s, 120 s and 240 s.
pub const RETRY_BASE_DELAY_DEFAULT: Duration = Duration::from_secs(60);
/// Default number of retries after the first attempt.
pub const MAX_RETRIES_DEFAULT: u32 = 3;
/// The largest jitter, as a fraction of the delay.
pub const MAX_JITTER: f64 = 0.10;
/// Default cap on the delay a `Retry-After` may ask for.
pub const MAX_RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(3600);

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this delay.
    RetryIn(Duration),
    /// That was the last attempt: the delivery is `failed`.
    GiveUp,
}

/// The schedule for one daemon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubles after each further one.
    pub base_delay: Duration,
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Fraction of the delay added at random, 0 to [`MAX_JITTER`].
    pub jitter: f64,
    /// The longest delay a `Retry-After` is honoured for.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: RETRY_BASE_DELAY_DEFAULT,
            max_retries: MAX_RETRIES_DEFAULT,
            jitter: MAX_JITTER,
            max_retry_after: MAX_RETRY_AFTER_DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The delay without jitter after failed attempt `attempt` (1-based).
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        // 2^30 × any sane base is already centuries; cap the shift there.
        let doublings = attempt.saturating_sub(1).min(30);
        self.base_delay.saturating_mul(1u32 << doublings)
    }

    /// What to do after failed attempt `attempt` (1-based).
    pub fn after_failed_attempt(&self, attempt: u32) -> AfterFailure {
        if attempt >= self.max_attempts() {
            return AfterFailure::GiveUp;
        }
        let nominal = self.nominal_delay(attempt);
        let jitter = self.jitter.clamp(0.0, MAX_JITTER);
        let extra = if jitter > 0.0 {
            nominal.mul_f64(rand::thread_rng().gen_range(0.0..=jitter))
        } else {
            Duration::ZERO
        };
        AfterFailure::RetryIn(nominal + extra)
    }

    /// What to do after failed attempt `attempt` whose answer asked for
    /// `retry_after` (a 429 or 503 with a valid `Retry-After`): the schedule,
    /// with the retry due no earlier than asked, capped at `max_retry_after`.
    pub fn after_failed_attempt_asking(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> AfterFailure {
        match self.after_failed_attempt(attempt) {
            AfterFailure::RetryIn(scheduled) => {
                AfterFailure::RetryIn(honoured_delay(scheduled, retry_after, self.max_retry_after))
            }
            AfterFailure::GiveUp => AfterFailure::GiveUp,
        }
    }
}

/// The delay until the next attempt: the schedule's, or what the receiver
/// asked for when that is later, but never more than `cap` unless the
/// schedule itself is longer.
pub fn honoured_delay(scheduled: Duration, asked: Option<Duration>, cap: Duration) -> Duration {
    match asked {
        Some(asked) => scheduled.max(asked.min(cap)),
        None => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_60_120_240_then_give_up() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let secs = |d: Duration| d.as_secs();
        assert_eq!(
            policy.after_failed_attempt(1),
            AfterFailure::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(
            policy.after_failed_attempt(2),
            AfterFailure::RetryIn(Duration::from_secs(120))
        );
        assert_eq!(
            policy.after_failed_attempt(3),
            AfterFailure::RetryIn(Duration::from_secs(240))
        );
        assert_eq!(policy.after_failed_attempt(4), AfterFailure::GiveUp);
        assert_eq!(secs(policy.nominal_delay(3)), 240);
    }

    #[test]
    fn retry_delay_only_ever_adds_jitter_of_at_most_ten_percent() {
        let policy = RetryPolicy::default();
        for attempt in 1..=3 {
            let nominal = policy.nominal_delay(attempt);
            for _ in 0..200 {
                let AfterFailure::RetryIn(delay) = policy.after_failed_attempt(attempt) else {
                    panic!("attempt {attempt} must be retried");
                };
                assert!(delay >= nominal);
                assert!(delay <= nominal.mul_f64(1.0 + MAX_JITTER));
            }
        }
    }

    #[test]
    fn retry_after_delays_within_the_cap_and_never_advances_the_schedule() {
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        assert_eq!(honoured_delay(minute, None, hour), minute);
        assert_eq!(honoured_delay(minute, Some(minute * 5), hour), minute * 5);
        assert_eq!(honoured_delay(minute, Some(hour * 3), hour), hour, "capped");
        assert_eq!(
            honoured_delay(minute, Some(Duration::from_secs(5)), hour),
            minute,
            "never earlier than the schedule"
        );
        assert_eq!(
            honoured_delay(hour * 2, Some(hour * 3), hour),
            hour * 2,
            "a cap below the schedule does not shorten it"
        );
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.after_failed_attempt_asking(1, Some(minute * 10)),
            AfterFailure::RetryIn(minute * 10)
        );
        assert_eq!(
            policy.after_failed_attempt_asking(4, Some(minute)),
            AfterFailure::GiveUp,
            "the last attempt still fails"
        );
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_retries: u32::MAX,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            policy.after_failed_attempt(1000),
            AfterFailure::RetryIn(_)
        ));
        assert_eq!(policy.max_attempts(), u32::MAX);
    }
}
