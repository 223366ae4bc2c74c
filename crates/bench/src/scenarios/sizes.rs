//! How big each scenario is: the full sizes, `--quick`'s, and the soak's
//! and xmin scenario's flags.

/// How big each scenario is.
pub struct Sizes {
    pub(super) throughput_events: i64,
    pub(super) fanout_events: i64,
    pub(super) fanout_webhooks: usize,
    pub(super) latency_seconds: u64,
    pub(super) latency_rate: u64,
    /// Away: retries waiting for the away receiver while the latency runs.
    pub(super) away_pending: i64,
    pub(super) isolation_events: i64,
    pub(super) replica_events: i64,
    pub(super) producer_seconds: u64,
    pub(super) producer_rounds: usize,
    pub(super) backlogs: [i64; 2],
    pub(super) backlog_measured: u64,
    pub(super) soak_seconds: u64,
    pub(super) soak_rate: u64,
    pub(super) xmin_seconds: u64,
    pub(super) xmin_rate: u64,
    /// Deliveries per ceiling run, to one webhook and to `fanout_webhooks`.
    pub(super) ceiling_deliveries: i64,
    /// The ceiling's connection counts; the best counts.
    pub(super) ceiling_workers: &'static [usize],
    /// Tenants: organizations, webhooks per organization, events per organization.
    pub(super) tenants: (usize, usize, i64),
}

impl Sizes {
    /// The full sizes.
    pub fn full() -> Sizes {
        Sizes {
            throughput_events: 50_000,
            fanout_events: 5_000,
            fanout_webhooks: 10,
            latency_seconds: 30,
            latency_rate: 200,
            away_pending: 200_000,
            isolation_events: 5_000,
            replica_events: 50_000,
            producer_seconds: 5,
            producer_rounds: 6,
            backlogs: [10_000, 1_000_000],
            backlog_measured: 10_000,
            soak_seconds: 600,
            soak_rate: 3_500,
            xmin_seconds: 300,
            xmin_rate: 50,
            ceiling_deliveries: 200_000,
            ceiling_workers: &[1, 2, 4],
            tenants: (500, 4, 40),
        }
    }

    /// Replaces the soak's rate and length where given.
    pub fn override_soak(&mut self, rate: Option<u64>, seconds: Option<u64>) {
        self.soak_rate = rate.unwrap_or(self.soak_rate);
        self.soak_seconds = seconds.unwrap_or(self.soak_seconds);
    }

    /// Replaces the xmin scenario's rate and length where given.
    pub fn override_xmin(&mut self, rate: Option<u64>, seconds: Option<u64>) {
        self.xmin_rate = rate.unwrap_or(self.xmin_rate);
        self.xmin_seconds = seconds.unwrap_or(self.xmin_seconds);
    }

    /// About a minute and a half in all.
    pub fn quick() -> Sizes {
        Sizes {
            throughput_events: 10_000,
            fanout_events: 1_000,
            fanout_webhooks: 10,
            latency_seconds: 10,
            latency_rate: 200,
            away_pending: 20_000,
            isolation_events: 2_000,
            replica_events: 10_000,
            producer_seconds: 3,
            producer_rounds: 2,
            backlogs: [10_000, 100_000],
            backlog_measured: 5_000,
            soak_seconds: 60,
            soak_rate: 1_000,
            xmin_seconds: 20,
            xmin_rate: 50,
            ceiling_deliveries: 40_000,
            ceiling_workers: &[2, 4],
            tenants: (100, 4, 10),
        }
    }
}
