//! Algorithms: one module per loss family.
