//! popo-verify: see ARCHITECTURE.md.
