//! SQLite store (placeholder until the backend lands).
use crate::Result;
/// SQLite-backed store.
pub struct SqliteStore;
impl SqliteStore {
    /// Connects.
    pub async fn connect(_url: &str) -> Result<Self> {
        Err(crate::Error::Config("SQLite store not built yet".into()))
    }
}
#[async_trait::async_trait]
impl super::Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        todo!()
    }
    async fn ping(&self) -> Result<()> {
        todo!()
    }
    async fn create_user(&self, _: &str, _: &[String]) -> Result<super::User> {
        todo!()
    }
    async fn get_user(&self, _: &str) -> Result<Option<super::User>> {
        todo!()
    }
    async fn add_api_key(&self, _: &str, _: &str) -> Result<()> {
        todo!()
    }
    async fn credentials(&self, _: &str) -> Result<Option<(super::User, Vec<String>)>> {
        todo!()
    }
    async fn insert_object(&self, _: &crate::object::Object) -> Result<()> {
        todo!()
    }
    async fn get_object(&self, _: super::Scope<'_>, _: uuid::Uuid) -> Result<Option<crate::object::Object>> {
        todo!()
    }
    async fn submit_action(&self, _: crate::action::NewAction) -> Result<super::Submitted> {
        todo!()
    }
    async fn get_action(&self, _: super::Scope<'_>, _: uuid::Uuid) -> Result<Option<crate::action::Action>> {
        todo!()
    }
    async fn unsent_outbox(&self, _: std::time::Duration, _: i64) -> Result<Vec<super::OutboxEntry>> {
        todo!()
    }
    async fn mark_outbox_sent(&self, _: &[i64]) -> Result<()> {
        todo!()
    }
    async fn claim_action(
        &self,
        _: uuid::Uuid,
        _: &str,
        _: std::time::Duration,
    ) -> Result<Option<super::Claim>> {
        todo!()
    }
    async fn heartbeat(&self, _: uuid::Uuid, _: super::LeaseToken, _: std::time::Duration) -> Result<bool> {
        todo!()
    }
    async fn append_logs(
        &self,
        _: uuid::Uuid,
        _: Option<super::LeaseToken>,
        _: &[crate::logline::NewLogLine],
    ) -> Result<Vec<crate::logline::LogLine>> {
        todo!()
    }
    async fn logs(&self, _: uuid::Uuid, _: Option<i64>) -> Result<Vec<crate::logline::LogLine>> {
        todo!()
    }
    async fn transition(
        &self,
        _: super::Scope<'_>,
        _: uuid::Uuid,
        _: crate::state::ActionState,
        _: Option<super::LeaseToken>,
    ) -> Result<super::Transitioned> {
        todo!()
    }
    async fn reap_expired_leases(&self, _: i32, _: i64) -> Result<super::Reaped> {
        todo!()
    }
    async fn redispatch_unclaimed(&self, _: std::time::Duration, _: i64) -> Result<Vec<uuid::Uuid>> {
        todo!()
    }
    async fn events_after(&self, _: super::Scope<'_>, _: i64, _: i64) -> Result<Vec<crate::event::Event>> {
        todo!()
    }
}
