//! Federation (ministry tier): enterprise collectors push per-organisation aggregates, never
//! device rows, to a ministry collector, which answers fleet summaries across enterprises.
//!
//! Not built yet: this collector has no federated organisations. [`Collector::federated_rows`]
//! is the seam the fleet summary reads through.

use crate::collector::Collector;
use crate::error::CollectorError;
use crate::queries::FleetRow;

impl Collector {
    /// Rows pushed by enterprise collectors; none until federation is configured.
    pub fn federated_rows(&self) -> Result<Vec<FleetRow>, CollectorError> {
        Ok(Vec::new())
    }
}
