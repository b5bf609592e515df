//! popo-train: see ARCHITECTURE.md.
