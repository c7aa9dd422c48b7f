//! `noop` and `fail`: built-ins that do nothing, for tests, benchmarks and
//! placeholders in a config.

use super::{Handler, HandlerContext, Outcome};
use async_trait::async_trait;

/// Succeeds at once.
pub struct NoopHandler;

#[async_trait]
impl Handler for NoopHandler {
    async fn run(&self, _ctx: &HandlerContext) -> Outcome {
        Outcome::Success
    }
}

/// Fails at once.
pub struct FailHandler;

#[async_trait]
impl Handler for FailHandler {
    async fn run(&self, _ctx: &HandlerContext) -> Outcome {
        Outcome::Failed("the fail handler always fails".into())
    }
}
