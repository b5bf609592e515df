//! popo-eval: benchmark metrics (avg@n, pass@k, maj@n, greedy), `popo eval`, experiment grids,
//! reports and plots.

pub mod bench;
pub mod claims;
pub mod experiment;
pub mod metrics;
pub mod plot;
