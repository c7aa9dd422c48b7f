//! Job messages that carry several actions, on both backends: a worker with
//! fewer free slots than a message has actions claims what it can take,
//! hands the rest on as a new message, and every action runs exactly once,
//! also when the same message arrives twice.

use std::sync::Arc;
use std::time::Duration;
use stevedore_broker::amqp::AmqpBroker;
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::action::NewAction;
use stevedore_core::broker::{BrokerNames, DynBroker};
use stevedore_core::config::FileConfig;
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::messages::JobMessage;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::state::ActionState;
use stevedore_core::store::{DynStore, Scope};
use stevedore_core::testing::{self, amqp_url, unique_prefix, TestDatabase};
use stevedore_worker::Worker;
use uuid::Uuid;

/// Two slots, and an operation that holds one for a fifth of a second.
const CONFIG: &str = r#"
[worker]
concurrency = 2
[[operation]]
object = "service"
verb = "nap"
handler = "sleep"
"#;

fn new_action(object: Uuid) -> NewAction {
    NewAction {
        body: r#"{"seconds": 0.2}"#.into(),
        ..testing::new_action(object, "nap")
    }
}

async fn a_message_larger_than_the_free_slots_runs_every_action_once(store: DynStore, broker: DynBroker) {
    store.migrate().await.unwrap();
    broker.declare().await.unwrap();
    let dispatcher = Dispatcher::new(store.clone(), broker.clone());
    let news: Vec<NewAction> = (0..7).map(|_| new_action(Uuid::new_v4())).collect();
    let submitted = store.submit_actions(&news).await.unwrap();
    let uuids: Vec<Uuid> = submitted.iter().map(|s| s.action.uuid).collect();
    // One message with all seven, and the same message again (a duplicate).
    let message = JobMessage {
        actions: uuids.clone(),
    };
    broker.publish_jobs(&[message.clone(), message]).await.unwrap();

    let file = FileConfig::parse(CONFIG).unwrap();
    let ops = Arc::new(file.operations().unwrap());
    let shutdown = Shutdown::new();
    let worker = Worker::new(dispatcher.clone(), ops, file.worker.clone());
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = 0;
        for u in &uuids {
            let a = store.get_action(Scope::All, *u).await.unwrap().unwrap();
            if a.state == ActionState::Success {
                done += 1;
            }
        }
        if done == uuids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {} succeeded",
            uuids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for u in &uuids {
        let a = store.get_action(Scope::All, *u).await.unwrap().unwrap();
        assert_eq!(a.claims, 1, "action {u} was claimed more than once");
    }
    // Whatever was handed on or duplicated has been taken and acked.
    let drained = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.jobs_depth().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < drained, "jobs left on the queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("worker stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_postgres_and_rabbitmq() {
    let db = TestDatabase::create().await;
    let store = stevedore_store::connect(db.url()).await.unwrap();
    let amqp = Arc::new(
        AmqpBroker::connect(&amqp_url(), BrokerNames::new(unique_prefix("batches")))
            .await
            .unwrap(),
    );
    let broker: DynBroker = amqp.clone();
    a_message_larger_than_the_free_slots_runs_every_action_once(store, broker).await;
    amqp.delete_topology().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_sqlite_and_the_in_process_broker() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = stevedore_store::connect(&url).await.unwrap();
    let broker: DynBroker = Arc::new(MemoryBroker::new());
    a_message_larger_than_the_free_slots_runs_every_action_once(store, broker).await;
}
