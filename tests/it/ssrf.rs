//! Outbound safety: non-public targets are refused at creation and at every delivery.
