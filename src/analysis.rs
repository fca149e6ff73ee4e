//! Automatic progression (issue 17): metrics providers, checks, the
//! evaluation state machine and the evaluator that advances or rolls back a
//! service by itself.

pub mod machine;
pub mod provider;
pub mod runner;
