//! What a receiver got against the deliveries in the database: missing and
//! duplicated delivery ids, and the leases a killed replica left behind.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::receiver::Recorded;

/// What the receiver got, against the deliveries in the database.
pub struct Tally {
    /// Requests received.
    pub arrivals: usize,
    /// Distinct delivery ids among them.
    pub distinct: usize,
    /// Delivery ids that arrived more than once.
    pub duplicate_ids: usize,
    pub duplicated: Vec<String>,
    /// Deliveries in the database.
    pub expected: usize,
    /// Deliveries that never arrived.
    pub missing: Vec<String>,
    /// Arrivals whose id is not a delivery.
    pub unknown: usize,
}

impl Tally {
    /// The tally of what a receiver recorded.
    pub async fn of(db: &tokio_postgres::Client, arrivals: &[Recorded]) -> Tally {
        let ids: Vec<String> = arrivals.iter().map(Recorded::delivery_id).collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let expected: Vec<String> = db
            .query("SELECT id::text FROM outbox.deliveries", &[])
            .await
            .expect("read delivery ids")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let known: HashSet<&str> = expected.iter().map(String::as_str).collect();
        let duplicated: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.to_string())
            .collect();
        Tally {
            arrivals: arrivals.len(),
            distinct: counts.len(),
            duplicate_ids: duplicated.len(),
            duplicated,
            missing: expected
                .iter()
                .filter(|id| !counts.contains_key(id.as_str()))
                .cloned()
                .collect(),
            unknown: counts.keys().filter(|id| !known.contains(*id)).count(),
            expected: expected.len(),
        }
    }

    pub fn assert_none_missing(&self) {
        assert!(
            self.missing.is_empty(),
            "{} of {} deliveries never arrived, e.g. {:?}",
            self.missing.len(),
            self.expected,
            &self.missing[..self.missing.len().min(5)]
        );
        assert_eq!(self.unknown, 0, "every request carries a known delivery id");
    }
}

/// The rows leased at one moment: id, attempt number and lease expiry.
pub struct LeaseSnapshot {
    pub ids: Vec<Uuid>,
    pub attempts: Vec<i32>,
    pub expires: Vec<DateTime<Utc>>,
}

/// A delivery leased by a replica that died before recording its attempt.
pub struct Orphan {
    pub id: String,
    /// It was delivered no earlier than its lease expired.
    pub delivered_after_lease: bool,
}

impl LeaseSnapshot {
    pub async fn take(db: &tokio_postgres::Client) -> LeaseSnapshot {
        let rows = db
            .query(
                "SELECT id, attempts, next_attempt_at FROM outbox.deliveries
                 WHERE status = 'pending' AND lease_token IS NOT NULL",
                &[],
            )
            .await
            .expect("read leased deliveries");
        LeaseSnapshot {
            ids: rows.iter().map(|row| row.get(0)).collect(),
            attempts: rows.iter().map(|row| row.get(1)).collect(),
            expires: rows.iter().map(|row| row.get(2)).collect(),
        }
    }

    /// The leased attempts that never got into the attempt log: a replica
    /// that finishes an attempt logs it, a killed one cannot.
    pub async fn orphans(&self, db: &tokio_postgres::Client) -> Vec<Orphan> {
        db.query(
            "SELECT s.id::text, d.delivered_at >= s.expires
             FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS s(id, attempt, expires)
             JOIN outbox.deliveries d ON d.id = s.id
             WHERE NOT EXISTS (SELECT 1 FROM outbox.delivery_attempts a
                               WHERE a.delivery_id = s.id AND a.attempt = s.attempt)",
            &[&self.ids, &self.attempts, &self.expires],
        )
        .await
        .expect("find orphaned leases")
        .iter()
        .map(|row| Orphan {
            id: row.get(0),
            delivered_after_lease: row.get::<_, Option<bool>>(1).unwrap_or(false),
        })
        .collect()
    }
}
