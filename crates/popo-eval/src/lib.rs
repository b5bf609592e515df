//! popo-eval: benchmark metrics (avg@n, pass@k, maj@n, greedy), `popo eval`, experiment grids,
//! reports and plots.

pub mod bench;
pub mod claims;
pub mod collect;
pub mod datasets;
pub mod experiment;
pub mod job;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod stats;
pub mod summary;
