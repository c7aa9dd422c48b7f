//! The dispatcher and the outbox relay against real backends: a job committed
//! but never published is published by the relay, exactly once.

use futures::StreamExt;

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use stevedore_broker::amqp::AmqpBroker;
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::action::NewAction;
use stevedore_core::broker::{BrokerNames, DynBroker};
use stevedore_core::dispatch::{Dispatcher, OutboxRelay, SubmitBatcher};
use stevedore_core::group_commit::Lanes;
use stevedore_core::state::ActionState;
use stevedore_core::store::{DynStore, Scope};
use stevedore_core::testing::{self, amqp_url, unique_prefix, TestDatabase};
use uuid::Uuid;

fn new_action(object: Uuid) -> NewAction {
    testing::new_action(object, "start")
}

async fn the_relay_publishes_what_was_committed_but_not_published(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    // Committed, then "crashed" before publishing: nothing is on the queue.
    let submitted = store.submit_action(new_action(Uuid::new_v4())).await.unwrap();
    assert!(submitted.outbox_id.is_some());
    let relay = OutboxRelay::new(dispatcher).with_timings(
        Duration::from_millis(10),
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let mut jobs = broker.consume_jobs(10).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.job.actions[0], submitted.action.uuid);
    d.acker.ack().await.unwrap();
    // Marked sent: the next pass publishes nothing.
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert!(store.unsent_outbox(Duration::ZERO, 10).await.unwrap().is_empty());
}

async fn an_action_nobody_claimed_is_published_again(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    let submitted = store.submit_action(new_action(Uuid::new_v4())).await.unwrap();
    dispatcher.publish(&[&submitted]).await;
    let mut jobs = broker.consume_jobs(10).await.unwrap();
    // The broker "loses" the confirmed message: consumed and acked, never claimed.
    let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    d.acker.ack().await.unwrap();
    // Its outbox row is marked sent a moment after the confirm.
    wait_until_all_sent(&store).await;
    let relay =
        OutboxRelay::new(dispatcher).with_timings(Duration::from_millis(10), Duration::ZERO, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.job.actions[0], submitted.action.uuid);
    d.acker.ack().await.unwrap();
}

/// Unclaimed actions whose messages still wait in the queue (a stopped
/// worker pool) are not published again, however long they wait: the
/// backlog is not multiplied. Once the queue is empty and they are still
/// unclaimed (their messages were lost), each is published once more.
async fn a_backlog_is_not_multiplied_by_the_relay(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    let mut uuids = Vec::new();
    for _ in 0..5 {
        let s = store.submit_action(new_action(Uuid::new_v4())).await.unwrap();
        dispatcher.publish(&[&s]).await;
        uuids.push(s.action.uuid);
    }
    wait_until_all_sent(&store).await;
    assert_eq!(broker.jobs_depth().await.unwrap(), 5);
    let relay =
        OutboxRelay::new(dispatcher).with_timings(Duration::from_millis(10), Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(relay.run_once().await.unwrap(), 0);
    }
    assert_eq!(
        broker.jobs_depth().await.unwrap(),
        5,
        "the relay copied the backlog"
    );
    // The messages are lost: consumed and acked, never claimed.
    let mut jobs = broker.consume_jobs(10).await.unwrap();
    for _ in 0..5 {
        let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        d.acker.ack().await.unwrap();
    }
    drop(jobs);
    wait_for_depth(&broker, 0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(relay.run_once().await.unwrap(), 5);
    // One message for the five (jobs travel in groups).
    wait_for_depth(&broker, 1).await;
    // Published once: while it waits, nothing more.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(relay.run_once().await.unwrap(), 0);
    assert_eq!(broker.jobs_depth().await.unwrap(), 1);
    let mut jobs = broker.consume_jobs(10).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut again = d.job.actions.clone();
    again.sort();
    uuids.sort();
    assert_eq!(again, uuids);
    d.acker.ack().await.unwrap();
}

/// Waits (up to 10 s) for the jobs queue to hold `n` ready messages.
async fn wait_for_depth(broker: &DynBroker, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.jobs_depth().await.unwrap() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs queue never held {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Several submission batches in flight at once (a second lane opens for a
/// backlog of two): every request is recorded exactly once, each object gets
/// exactly one In progress action (the others wait as Pending), every event
/// has its own `seq`, and exactly the dispatched actions have outbox rows.
async fn batches_in_flight_together_record_every_submission_once(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    let lanes = Lanes {
        max: 3,
        parallel_from: 2,
        interval: std::time::Duration::ZERO,
    };
    let batcher = SubmitBatcher::spawn_with(dispatcher, lanes);
    let objects: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let sent: Vec<NewAction> = (0..300).map(|i| new_action(objects[i % objects.len()])).collect();
    let results = futures::future::join_all(sent.iter().map(|n| batcher.submit(n.clone()))).await;
    let mut running: HashMap<Uuid, usize> = HashMap::new();
    let mut seqs = HashSet::new();
    for (new, r) in sent.iter().zip(results) {
        let s = r.unwrap();
        assert_eq!(s.action.uuid, new.uuid);
        assert!(seqs.insert(s.event.seq), "seq {} twice", s.event.seq);
        let stored = store.get_action(Scope::All, new.uuid).await.unwrap().unwrap();
        assert_eq!(stored.state, s.action.state);
        match s.action.state {
            ActionState::InProgress => {
                assert!(s.outbox_id.is_some());
                *running.entry(new.object_uuid).or_default() += 1;
            }
            ActionState::Pending => assert!(s.outbox_id.is_none()),
            other => panic!("a new action in {other}"),
        }
    }
    assert_eq!(running.len(), objects.len(), "every object runs one action");
    assert!(running.values().all(|n| *n == 1), "{running:?}");
}

/// Waits (up to 10 s) until no outbox row is left unsent.
async fn wait_until_all_sent(store: &DynStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let unsent = store.unsent_outbox(Duration::ZERO, 100).await.unwrap();
        if unsent.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} outbox rows still unsent after 10 s",
            unsent.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Confirmed jobs' outbox rows are marked sent a moment after the answers
/// (the marks of many batches in one statement): none is left for the relay
/// to publish again.
async fn confirmed_outbox_rows_are_marked_sent_soon_after(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    let batcher = SubmitBatcher::spawn(dispatcher);
    let objects: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let results = futures::future::join_all(objects.iter().map(|o| batcher.submit(new_action(*o)))).await;
    let ids: HashSet<i64> = results
        .into_iter()
        .map(|r| r.unwrap().outbox_id.unwrap())
        .collect();
    assert_eq!(ids.len(), objects.len());
    // Answered as soon as confirmed: marking follows within the delay.
    let unsent = store.unsent_outbox(Duration::ZERO, 100).await.unwrap();
    assert!(unsent.iter().all(|e| ids.contains(&e.id)), "{unsent:?}");
    wait_until_all_sent(&store).await;
    let mut jobs = broker.consume_jobs(100).await.unwrap();
    let mut published = HashSet::new();
    while published.len() < objects.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), jobs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        published.extend(d.job.actions.iter().copied());
        d.acker.ack().await.unwrap();
    }
    // Nothing for the relay: every row was marked.
    let relay = OutboxRelay::new(Dispatcher::new(store.clone(), broker.clone())).with_timings(
        Duration::from_millis(10),
        Duration::ZERO,
        Duration::from_secs(3600),
    );
    assert_eq!(relay.run_once().await.unwrap(), 0);
}

macro_rules! on_both {
    ($($name:ident),*) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("s.db").display());
                    let store = stevedore_store::connect(&url).await.unwrap();
                    super::$name(store, std::sync::Arc::new(super::MemoryBroker::new())).await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDatabase::create().await;
                    let store = stevedore_store::connect(db.url()).await.unwrap();
                    let names = super::BrokerNames::new(super::unique_prefix("dispatch"));
                    let amqp = std::sync::Arc::new(super::AmqpBroker::connect(&super::amqp_url(), names).await.unwrap());
                    super::$name(store, amqp.clone()).await;
                    amqp.delete_topology().await.unwrap();
                }
            )*
        }
    };
}

on_both!(
    the_relay_publishes_what_was_committed_but_not_published,
    an_action_nobody_claimed_is_published_again,
    a_backlog_is_not_multiplied_by_the_relay,
    batches_in_flight_together_record_every_submission_once,
    confirmed_outbox_rows_are_marked_sent_soon_after
);
