//! popo-model: see ARCHITECTURE.md.
