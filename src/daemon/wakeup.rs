//! The producers' NOTIFY switch as one replica's main loop drives it
//! (docs/ARCHITECTURE.md, wake-ups): off while the loop is busy, on when it
//! is drained, and a fence to wait out before the loop sleeps long. No I/O:
//! the loop reads and writes the switch through the database.

use std::time::Duration;

use crate::db::queue::NextWork;

/// First pause while waiting for the fence; doubles up to [`FENCE_WAIT_MAX`].
const FENCE_WAIT_FIRST: Duration = Duration::from_millis(5);
/// Longest pause while waiting for the fence. A long transaction elsewhere
/// holds the fence back; one cheap query a second is what it costs then.
const FENCE_WAIT_MAX: Duration = Duration::from_secs(1);

/// One replica's side of the producers' NOTIFY switch (docs/ARCHITECTURE.md, wake-ups).
///
/// Busy: off, the loop polls back to back anyway. Drained: on, then wait until
/// every transaction that could have seen it off has ended (the fence), and
/// look once more before a long sleep. Without the fence, a producer that
/// inserted while the switch was off and committed after the last look would
/// wait for the fallback poll.
#[derive(Debug, Default)]
pub struct WakeupSwitch {
    /// This replica turned it off and has not seen it on since.
    off: bool,
    /// Transactions with an id below this may have seen the switch off.
    fence: Option<i64>,
    fence_wait: Duration,
}

/// What a drained loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    /// The switch is off: turn it on (then call [`WakeupSwitch::turned_on`]).
    TurnOn,
    /// The fence has passed: look for work once more now.
    LookAgain,
    /// Transactions that may have seen the switch off are still running:
    /// look again after this long.
    WaitForFence(Duration),
    /// Nothing to wait for: sleep until woken.
    Sleep,
}

impl WakeupSwitch {
    /// The loop found a full batch. True when the switch must be turned off.
    pub fn on_busy(&mut self) -> bool {
        self.fence = None;
        !std::mem::replace(&mut self.off, true)
    }

    /// The switch was turned on; `fence` is what the database returned.
    pub fn turned_on(&mut self, fence: i64) {
        self.off = false;
        self.fence = Some(fence);
        self.fence_wait = FENCE_WAIT_FIRST;
    }

    /// The loop is drained; `next` is the latest reading. The switch is read
    /// every time, since another replica may have turned it off and died.
    pub fn on_idle(&mut self, next: &NextWork) -> IdleStep {
        if !next.notify_on {
            return IdleStep::TurnOn;
        }
        self.off = false;
        match self.fence {
            Some(fence) if next.oldest_running < fence => {
                let wait = self.fence_wait;
                self.fence_wait = (self.fence_wait * 2).min(FENCE_WAIT_MAX);
                IdleStep::WaitForFence(wait)
            }
            Some(_) => {
                self.fence = None;
                IdleStep::LookAgain
            }
            None => IdleStep::Sleep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(notify_on: bool, oldest_running: i64) -> NextWork {
        NextWork {
            due_in: None,
            notify_on,
            oldest_running,
        }
    }

    #[test]
    fn busy_turns_the_switch_off_once() {
        let mut switch = WakeupSwitch::default();
        assert!(switch.on_busy());
        assert!(!switch.on_busy());
    }

    #[test]
    fn drained_turns_it_on_then_waits_for_the_fence_then_looks_once_more() {
        let mut switch = WakeupSwitch::default();
        switch.on_busy();
        assert_eq!(switch.on_idle(&reading(false, 100)), IdleStep::TurnOn);
        switch.turned_on(120);
        assert_eq!(
            switch.on_idle(&reading(true, 110)),
            IdleStep::WaitForFence(FENCE_WAIT_FIRST)
        );
        assert_eq!(
            switch.on_idle(&reading(true, 110)),
            IdleStep::WaitForFence(FENCE_WAIT_FIRST * 2)
        );
        assert_eq!(switch.on_idle(&reading(true, 120)), IdleStep::LookAgain);
        assert_eq!(switch.on_idle(&reading(true, 130)), IdleStep::Sleep);
    }

    #[test]
    fn a_switch_left_off_by_another_replica_is_turned_back_on() {
        let mut switch = WakeupSwitch::default();
        assert_eq!(switch.on_idle(&reading(false, 1)), IdleStep::TurnOn);
    }

    #[test]
    fn fence_waits_are_capped() {
        let mut switch = WakeupSwitch::default();
        switch.turned_on(10);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let IdleStep::WaitForFence(wait) = switch.on_idle(&reading(true, 1)) {
                last = wait;
            }
        }
        assert_eq!(last, FENCE_WAIT_MAX);
    }
}
