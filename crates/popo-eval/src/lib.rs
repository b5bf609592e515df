//! popo-eval: see ARCHITECTURE.md.
