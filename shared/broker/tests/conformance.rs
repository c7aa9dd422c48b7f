//! One conformance suite for both `Broker` backends.
//!
//! Every generic test below runs once against RabbitMQ (`amqp::…`, under a
//! unique prefix whose topology is deleted afterwards, even when the test
//! fails) and once against the in-process broker (`memory::…`). Each test is
//! bounded by a timeout so a broken backend fails instead of hanging.
//!
//! RabbitMQ is reached at `STEVEDORE_TEST_AMQP_URL` (see
//! `stevedore_core::testing`).

use async_trait::async_trait;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stevedore_broker::amqp::AmqpBroker;
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::broker::{
    Broker, BrokerNames, DeadLetter, DeadLetterStream, JobDelivery, JobStream, JOB_DELIVERY_LIMIT,
};
use stevedore_core::messages::{Control, JobMessage, Update};
use stevedore_core::testing::{amqp_url, unique_prefix};
use tokio::sync::mpsc;
use tokio::time::timeout;
use uuid::Uuid;

/// The most any one test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The most one expected message may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long we watch for a message that must not arrive.
const QUIET: Duration = Duration::from_millis(500);

/// What the suite needs beyond the `Broker` trait.
#[async_trait]
trait Backend: Broker + Sized {
    /// A fresh broker with its own, empty topology (not yet declared).
    async fn open(label: &str) -> Arc<Self>;
    /// Jobs in the dead-letter queue.
    async fn dead_count(&self) -> usize;
    /// Jobs ready in the jobs queue.
    async fn ready_count(&self) -> usize;
    /// Removes whatever `open` and the test created.
    async fn cleanup(&self);
}

#[async_trait]
impl Backend for AmqpBroker {
    async fn open(label: &str) -> Arc<Self> {
        let label: String = label.chars().take(40).collect();
        let names = BrokerNames::new(unique_prefix(&label));
        let broker = AmqpBroker::connect(&amqp_url(), names)
            .await
            .expect("RabbitMQ must be reachable at STEVEDORE_TEST_AMQP_URL");
        Arc::new(broker)
    }
    async fn dead_count(&self) -> usize {
        self.dead_letter_depth().await.expect("dead-letter depth") as usize
    }
    async fn ready_count(&self) -> usize {
        self.jobs_depth().await.expect("jobs depth") as usize
    }
    async fn cleanup(&self) {
        if let Err(e) = self.delete_topology().await {
            eprintln!("cleanup of {} failed: {e}", self.names().prefix);
        }
    }
}

#[async_trait]
impl Backend for MemoryBroker {
    async fn open(_label: &str) -> Arc<Self> {
        Arc::new(MemoryBroker::new())
    }
    async fn dead_count(&self) -> usize {
        self.dead_letter_depth()
    }
    async fn ready_count(&self) -> usize {
        self.jobs_depth()
    }
    async fn cleanup(&self) {}
}

/// Opens and declares a broker, runs `test` under [`TEST_TIMEOUT`], cleans up
/// whatever the outcome, then reports the outcome.
async fn run<B, F, Fut>(label: &str, test: F)
where
    B: Backend,
    F: FnOnce(Arc<B>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_on(label, B::open(label).await, test).await;
}

/// [`run`] on a broker the test opened itself.
async fn run_on<B, F, Fut>(label: &str, broker: Arc<B>, test: F)
where
    B: Backend,
    F: FnOnce(Arc<B>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    broker.declare().await.expect("declare");
    let outcome = tokio::spawn(timeout(TEST_TIMEOUT, test(broker.clone()))).await;
    broker.cleanup().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{label}: timed out after {TEST_TIMEOUT:?}"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("{label}: {e}"),
    }
}

/// Runs each named generic test against both backends.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run::<super::AmqpBroker, _, _>(
                        stringify!($test),
                        super::$test::<super::AmqpBroker>,
                    )
                    .await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run::<super::MemoryBroker, _, _>(
                        stringify!($test),
                        super::$test::<super::MemoryBroker>,
                    )
                    .await;
                }
            )*
        }
    };
}

conformance!(
    ping_works,
    declare_is_idempotent,
    published_jobs_are_consumed_exactly_once_by_competing_consumers,
    requeued_job_is_redelivered_with_redelivered_flag,
    rejected_job_lands_in_dead_letter_queue,
    job_left_unacked_when_consumer_stream_dropped_is_delivered_again,
    prefetch_bounds_unacked_deliveries,
    job_delivered_more_than_the_limit_is_dead_lettered,
    updates_fan_out_to_every_subscriber,
    control_fans_out_to_every_subscriber,
    batch_of_1000_jobs_with_pipelined_confirms_is_all_consumed,
    dead_letters_are_consumed_with_their_reason,
    a_dead_letter_not_acked_comes_again,
    a_job_over_the_delivery_limit_reaches_the_dead_letter_consumer,
);

// ---------------------------------------------------------------- helpers

fn new_jobs(n: usize) -> Vec<JobMessage> {
    (0..n).map(|_| JobMessage::one(Uuid::new_v4())).collect()
}

/// The next delivery, which must arrive within [`ARRIVAL`].
async fn next_delivery(stream: &mut JobStream) -> JobDelivery {
    match timeout(ARRIVAL, stream.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(e))) => panic!("job stream failed: {e}"),
        Ok(None) => panic!("job stream ended"),
        Err(_) => panic!("no delivery within {ARRIVAL:?}"),
    }
}

/// Asserts that no delivery arrives within [`QUIET`].
async fn assert_no_delivery(stream: &mut JobStream) {
    if let Ok(Some(item)) = timeout(QUIET, stream.next()).await {
        panic!("unexpected delivery: {:?}", item.map(|d| d.job));
    }
}

/// The next message of a subscription, which must arrive within [`ARRIVAL`].
async fn next_message<T: std::fmt::Debug>(
    stream: &mut futures::stream::BoxStream<'static, stevedore_core::Result<T>>,
) -> T {
    match timeout(ARRIVAL, stream.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no message within {ARRIVAL:?}"),
    }
}

/// Waits until `count` reports `expected` (dead-lettering is asynchronous in
/// RabbitMQ).
async fn eventually_count<F, Fut>(what: &str, expected: usize, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let now = count().await;
        if now == expected {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: expected {expected}, still {now} after {ARRIVAL:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- tests

async fn ping_works<B: Backend>(broker: Arc<B>) {
    broker.ping().await.expect("ping");
}

async fn declare_is_idempotent<B: Backend>(broker: Arc<B>) {
    broker.declare().await.expect("second declare");
    broker.declare().await.expect("third declare");
    let jobs = new_jobs(1);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(delivery.job, jobs[0]);
    delivery.acker.ack().await.expect("ack");
}

async fn published_jobs_are_consumed_exactly_once_by_competing_consumers<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(200);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Vec::new();
    for consumer in 0..2usize {
        let mut stream = broker.consume_jobs(16).await.expect("consume");
        let tx = tx.clone();
        consumers.push(tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let delivery = item.expect("delivery");
                delivery.acker.ack().await.expect("ack");
                if tx.send((consumer, delivery.job.actions[0])).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    broker.publish_jobs(&jobs).await.expect("publish");

    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    let mut per_consumer = [0usize; 2];
    while seen.len() < jobs.len() {
        let (consumer, action) = match timeout(ARRIVAL, rx.recv()).await {
            Ok(Some(seen)) => seen,
            _ => panic!("only {} of {} jobs consumed", seen.len(), jobs.len()),
        };
        per_consumer[consumer] += 1;
        if let Some(first) = seen.insert(action, consumer) {
            panic!("job {action} delivered twice (consumers {first} and {consumer})");
        }
    }
    if let Ok(Some((consumer, action))) = timeout(QUIET, rx.recv()).await {
        panic!("job {action} delivered again, to consumer {consumer}");
    }
    let expected: HashSet<Uuid> = jobs.iter().map(|j| j.actions[0]).collect();
    let consumed: HashSet<Uuid> = seen.keys().copied().collect();
    assert_eq!(consumed, expected);
    assert_eq!(per_consumer.iter().sum::<usize>(), jobs.len());
    for task in consumers {
        task.abort();
    }
    assert_eq!(broker.ready_count().await, 0);
}

async fn requeued_job_is_redelivered_with_redelivered_flag<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    let first = next_delivery(&mut stream).await;
    assert_eq!(first.job, jobs[0]);
    assert!(!first.redelivered, "first delivery flagged as redelivered");
    first.acker.requeue().await.expect("requeue");

    let second = next_delivery(&mut stream).await;
    assert_eq!(second.job, jobs[0]);
    assert!(second.redelivered, "requeued job not flagged as redelivered");
    second.acker.ack().await.expect("ack");
    assert_no_delivery(&mut stream).await;
}

async fn rejected_job_lands_in_dead_letter_queue<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(delivery.job, jobs[0]);
    delivery.acker.reject().await.expect("reject");

    eventually_count("dead letters", 1, || broker.dead_count()).await;
    assert_eq!(broker.ready_count().await, 0);
    assert_no_delivery(&mut stream).await;
}

async fn job_left_unacked_when_consumer_stream_dropped_is_delivered_again<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(4).await.expect("consume");
    let delivery = next_delivery(&mut stream).await;
    assert_eq!(delivery.job, jobs[0]);
    assert!(!delivery.redelivered);
    drop(delivery);
    drop(stream);

    let mut stream = broker.consume_jobs(4).await.expect("consume again");
    let again = next_delivery(&mut stream).await;
    assert_eq!(again.job, jobs[0]);
    assert!(again.redelivered, "redelivery not flagged as redelivered");
    again.acker.ack().await.expect("ack");
    assert_no_delivery(&mut stream).await;
}

async fn prefetch_bounds_unacked_deliveries<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(5);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(2).await.expect("consume");
    let mut held = vec![next_delivery(&mut stream).await, next_delivery(&mut stream).await];
    assert_no_delivery(&mut stream).await;

    // Settling one frees one slot, and only one.
    let first = held.remove(0);
    first.acker.ack().await.expect("ack");
    held.push(next_delivery(&mut stream).await);
    assert_no_delivery(&mut stream).await;

    let mut seen: HashSet<Uuid> = [first.job.actions[0]].into_iter().collect();
    for delivery in held {
        assert!(seen.insert(delivery.job.actions[0]), "duplicate delivery");
        delivery.acker.ack().await.expect("ack");
    }
    while seen.len() < jobs.len() {
        let delivery = next_delivery(&mut stream).await;
        assert!(seen.insert(delivery.job.actions[0]), "duplicate delivery");
        delivery.acker.ack().await.expect("ack");
    }
}

async fn job_delivered_more_than_the_limit_is_dead_lettered<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1);
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    for attempt in 0..=JOB_DELIVERY_LIMIT {
        let delivery = next_delivery(&mut stream).await;
        assert_eq!(delivery.job, jobs[0]);
        assert_eq!(delivery.redelivered, attempt > 0, "attempt {attempt}");
        delivery.acker.requeue().await.expect("requeue");
    }
    eventually_count("dead letters", 1, || broker.dead_count()).await;
    assert_no_delivery(&mut stream).await;
    assert_eq!(broker.ready_count().await, 0);
}

async fn updates_fan_out_to_every_subscriber<B: Backend>(broker: Arc<B>) {
    let mut first = broker.subscribe_updates().await.expect("subscribe");
    let mut second = broker.subscribe_updates().await.expect("subscribe");
    let updates: Vec<Update> = (0..3)
        .map(|i| Update::Logs {
            namespace: format!("tenant{i}"),
            lines: Vec::new(),
        })
        .collect();
    for update in &updates {
        broker.publish_update(update).await.expect("publish update");
    }
    for subscriber in [&mut first, &mut second] {
        for update in &updates {
            assert_eq!(&next_message(subscriber).await, update);
        }
    }
}

async fn control_fans_out_to_every_subscriber<B: Backend>(broker: Arc<B>) {
    let mut first = broker.subscribe_control().await.expect("subscribe");
    let mut second = broker.subscribe_control().await.expect("subscribe");
    let message = Control::Cancel {
        action: Uuid::new_v4(),
    };
    broker.publish_control(&message).await.expect("publish control");
    assert_eq!(next_message(&mut first).await, message);
    assert_eq!(next_message(&mut second).await, message);
}

async fn batch_of_1000_jobs_with_pipelined_confirms_is_all_consumed<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1000);
    broker.publish_jobs(&jobs).await.expect("publish batch");
    let mut stream = broker.consume_jobs(256).await.expect("consume");
    let mut seen = HashSet::new();
    while seen.len() < jobs.len() {
        let delivery = next_delivery(&mut stream).await;
        assert!(
            seen.insert(delivery.job.actions[0]),
            "job {} delivered twice",
            delivery.job.actions[0]
        );
        delivery.acker.ack().await.expect("ack");
    }
    let expected: HashSet<Uuid> = jobs.iter().map(|j| j.actions[0]).collect();
    assert_eq!(seen, expected);
    assert_no_delivery(&mut stream).await;
}

// ------------------------------------------------------- backend specifics

mod amqp_only {
    use super::*;
    use lapin::options::BasicPublishOptions;
    use lapin::BasicProperties;

    #[tokio::test]
    async fn connect_failure_is_clear_and_hides_the_password() {
        let url = "amqp://guest:hunter2-secret@127.0.0.1:1/%2f";
        let err = AmqpBroker::connect(url, BrokerNames::new(unique_prefix("unreachable")))
            .await
            .expect_err("nothing listens on port 1");
        let message = err.to_string();
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.contains("guest:***@"), "{message}");
        assert!(!message.contains("hunter2-secret"), "{message}");
    }

    /// A channel of its own on the test broker, past the driver.
    async fn raw_channel() -> (deadpool_lapin::Connection, lapin::Channel) {
        let raw = deadpool_lapin::Config {
            url: Some(amqp_url()),
            ..deadpool_lapin::Config::default()
        }
        .create_pool(Some(deadpool_lapin::Runtime::Tokio1))
        .expect("pool");
        let conn = raw.get().await.expect("connection");
        let channel = conn.create_channel().await.expect("channel");
        (conn, channel)
    }

    /// Messages ready in `queue`, read with a passive declare.
    async fn ready_in(queue: &str) -> u32 {
        let (_conn, channel) = raw_channel().await;
        let q = channel
            .queue_declare(
                queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue} is not declared: {e}"));
        let _ = channel.close(200, "OK").await;
        q.message_count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_spread_over_several_queues_and_one_consumer_takes_them_all() {
        let names = BrokerNames::new(unique_prefix("spread")).with_job_queues(3);
        assert_eq!(names.job_queues().len(), 3);
        let broker = Arc::new(AmqpBroker::connect(&amqp_url(), names).await.expect("connect"));
        run_on("spread", broker, |broker: Arc<AmqpBroker>| async move {
            // One call of six, then three calls of one: each message
            // goes to the next queue, across calls too.
            let mut jobs = new_jobs(6);
            broker.publish_jobs(&jobs).await.expect("publish six");
            for _ in 0..3 {
                let one = new_jobs(1);
                broker.publish_jobs(&one).await.expect("publish one");
                jobs.extend(one);
            }
            eventually_count("ready jobs", 9, || broker.ready_count()).await;
            for queue in broker.names().job_queues() {
                assert_eq!(ready_in(&queue).await, 3, "{queue} holds its share");
            }
            let mut stream = broker.consume_jobs(4).await.expect("consume");
            let mut seen = HashSet::new();
            for _ in 0..jobs.len() {
                let delivery = next_delivery(&mut stream).await;
                delivery.acker.ack().await.expect("ack");
                assert!(seen.insert(delivery.job.actions[0]), "delivered twice");
            }
            let expected: HashSet<Uuid> = jobs.iter().map(|j| j.actions[0]).collect();
            assert_eq!(seen, expected);
            assert_no_delivery(&mut stream).await;
            eventually_count("ready jobs", 0, || broker.ready_count()).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_url_list_skips_nodes_that_do_not_answer() {
        let list = format!("amqp://guest:hunter2-secret@127.0.0.1:1/%2f, {}", amqp_url());
        let broker = Arc::new(
            AmqpBroker::connect(&list, BrokerNames::new(unique_prefix("urllist")))
                .await
                .expect("the second node answers"),
        );
        run_on("urllist", broker, |broker: Arc<AmqpBroker>| async move {
            // Every further connection (the consumers' pool) also finds
            // the node that answers.
            let jobs = new_jobs(2);
            broker.publish_jobs(&jobs).await.expect("publish");
            let mut stream = broker.consume_jobs(4).await.expect("consume");
            for _ in 0..2 {
                next_delivery(&mut stream).await.acker.ack().await.expect("ack");
            }
        })
        .await;

        let all_down =
            "amqp://guest:hunter2-secret@127.0.0.1:1/%2f,amqp://guest:hunter2-secret@127.0.0.1:2/%2f";
        let message = AmqpBroker::connect(all_down, BrokerNames::new(unique_prefix("urllist")))
            .await
            .expect_err("no node answers")
            .to_string();
        assert!(
            message.contains("127.0.0.1:1") && message.contains("127.0.0.1:2"),
            "{message}"
        );
        assert!(!message.contains("hunter2-secret"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_job_payload_is_dead_lettered_and_skipped() {
        run::<AmqpBroker, _, _>("undecodable", |broker: Arc<AmqpBroker>| async move {
            let (_conn, channel) = raw_channel().await;
            channel
                .basic_publish(
                    "",
                    &broker.names().jobs_queue(),
                    BasicPublishOptions::default(),
                    b"{not json",
                    BasicProperties::default(),
                )
                .await
                .expect("publish garbage");
            let _ = channel.close(200, "OK").await;

            let jobs = new_jobs(1);
            broker.publish_jobs(&jobs).await.expect("publish");
            let mut stream = broker.consume_jobs(8).await.expect("consume");
            let delivery = next_delivery(&mut stream).await;
            assert_eq!(delivery.job, jobs[0]);
            delivery.acker.ack().await.expect("ack");
            eventually_count("dead letters", 1, || broker.dead_count()).await;
        })
        .await;
    }

    /// Runs `rabbitmqctl` with `args` and returns its standard output.
    async fn rabbitmqctl(args: Vec<String>) -> String {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(&args)
            .output()
            .await
            .expect("rabbitmqctl must be installed for this test");
        assert!(output.status.success(), "rabbitmqctl {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn job_stream_ends_when_the_connection_is_lost_and_consuming_again_works() {
        run::<AmqpBroker, _, _>("connection-lost", |broker: Arc<AmqpBroker>| async move {
            let jobs = new_jobs(1);
            broker.publish_jobs(&jobs).await.expect("publish");
            let mut stream = broker.consume_jobs(4).await.expect("consume");
            let held = next_delivery(&mut stream).await;

            let name = format!("{}-consume", broker.names().prefix);
            let listing = rabbitmqctl(
                [
                    "list_connections",
                    "-q",
                    "--no-table-headers",
                    "pid",
                    "client_properties",
                ]
                .map(String::from)
                .to_vec(),
            )
            .await;
            let pids: Vec<String> = listing
                .lines()
                .filter(|line| line.contains(&format!("\"{name}\"")))
                .filter_map(|line| line.split_whitespace().next().map(String::from))
                .collect();
            assert!(!pids.is_empty(), "no connection named {name} in:\n{listing}");
            for pid in pids {
                rabbitmqctl(vec!["close_connection".into(), pid, "test".into()]).await;
            }

            // The stream reports the loss (an error, or its end) and ends.
            match timeout(ARRIVAL, stream.next()).await {
                Ok(None) => {}
                Ok(Some(Err(_))) => {
                    let end = timeout(ARRIVAL, stream.next()).await.expect("ends");
                    assert!(end.is_none(), "stream goes on after an error");
                }
                Ok(Some(Ok(d))) => panic!("delivery after connection loss: {:?}", d.job),
                Err(_) => panic!("stream neither failed nor ended after connection loss"),
            }
            assert!(held.acker.ack().await.is_err(), "ack on a lost connection");
            drop(held);

            // A new consumer gets a new connection and the job again.
            let mut stream = broker.consume_jobs(4).await.expect("consume again");
            let again = next_delivery(&mut stream).await;
            assert_eq!(again.job, jobs[0]);
            assert!(again.redelivered);
            again.acker.ack().await.expect("ack");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishing_before_declare_fails() {
        let names = BrokerNames::new(unique_prefix("undeclared"));
        let broker = AmqpBroker::connect(&amqp_url(), names).await.expect("connect");
        let outcome = timeout(ARRIVAL, broker.publish_jobs(&new_jobs(2)))
            .await
            .expect("publish must not hang");
        let err = outcome.expect_err("no jobs queue: the jobs are unroutable");
        assert!(err.to_string().contains("unroutable"), "{err}");
        broker.delete_topology().await.expect("cleanup");
    }
}

mod memory_only {
    use super::*;

    #[tokio::test]
    async fn lagging_subscriber_learns_how_many_it_missed_then_continues() {
        let broker = MemoryBroker::with_broadcast_capacity(2);
        let mut stream = broker.subscribe_control().await.expect("subscribe");
        let messages: Vec<Control> = (0..5)
            .map(|_| Control::Cancel {
                action: Uuid::new_v4(),
            })
            .collect();
        for message in &messages {
            broker.publish_control(message).await.expect("publish");
        }
        let lag = timeout(ARRIVAL, stream.next())
            .await
            .expect("an item")
            .expect("not ended")
            .expect_err("a lag error first");
        assert!(lag.to_string().contains("missed 3"), "{lag}");
        assert_eq!(next_message(&mut stream).await, messages[3]);
        assert_eq!(next_message(&mut stream).await, messages[4]);
        let later = Control::Cancel {
            action: Uuid::new_v4(),
        };
        broker.publish_control(&later).await.expect("publish");
        assert_eq!(next_message(&mut stream).await, later);
    }

    #[tokio::test]
    async fn delivery_dropped_unsettled_is_requeued_at_once() {
        let broker = MemoryBroker::new();
        let jobs = new_jobs(1);
        broker.publish_jobs(&jobs).await.expect("publish");
        let mut stream = broker.consume_jobs(1).await.expect("consume");
        let delivery = next_delivery(&mut stream).await;
        assert_eq!(broker.unacked(), 1);
        drop(delivery);
        assert_eq!(broker.unacked(), 0);
        let again = next_delivery(&mut stream).await;
        assert!(again.redelivered);
        again.acker.ack().await.expect("ack");
        assert!(again.acker.ack().await.is_err(), "settling twice must fail");
        assert_eq!(broker.jobs_depth(), 0);
        assert!(broker.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn rejected_job_is_listed_in_dead_letters() {
        let broker = MemoryBroker::new();
        let jobs = new_jobs(2);
        broker.publish_jobs(&jobs).await.expect("publish");
        let mut stream = broker.consume_jobs(0).await.expect("consume");
        let first = next_delivery(&mut stream).await;
        let second = next_delivery(&mut stream).await;
        second.acker.reject().await.expect("reject");
        first.acker.ack().await.expect("ack");
        assert_eq!(broker.dead_letters(), vec![jobs[1].clone()]);
    }
}

// ------------------------------------------------------------ dead letters

/// The next dead letter, which must arrive within [`ARRIVAL`].
async fn next_dead(stream: &mut DeadLetterStream) -> DeadLetter {
    match timeout(ARRIVAL, stream.next()).await {
        Ok(Some(Ok(dead))) => dead,
        Ok(Some(Err(e))) => panic!("dead-letter stream failed: {e}"),
        Ok(None) => panic!("dead-letter stream ended"),
        Err(_) => panic!("no dead letter within {ARRIVAL:?}"),
    }
}

/// Asserts that no dead letter arrives within [`QUIET`].
async fn assert_no_dead(stream: &mut DeadLetterStream) {
    if let Ok(Some(item)) = timeout(QUIET, stream.next()).await {
        panic!("unexpected dead letter: {:?}", item.map(|d| d.job));
    }
}

async fn reject_one<B: Backend>(broker: &B) -> JobMessage {
    let job = new_jobs(1).remove(0);
    broker
        .publish_jobs(std::slice::from_ref(&job))
        .await
        .expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    let delivery = next_delivery(&mut stream).await;
    delivery.acker.reject().await.expect("reject");
    eventually_count("dead letters", 1, || broker.dead_count()).await;
    job
}

async fn dead_letters_are_consumed_with_their_reason<B: Backend>(broker: Arc<B>) {
    let job = reject_one(broker.as_ref()).await;
    let mut dead = broker
        .consume_dead_letters(4)
        .await
        .expect("consume dead letters");
    let d = next_dead(&mut dead).await;
    assert_eq!(d.job, job);
    assert!(d.reason.starts_with("rejected"), "{}", d.reason);
    d.acker.ack().await.expect("ack");
    assert_no_dead(&mut dead).await;
    eventually_count("dead letters", 0, || broker.dead_count()).await;
    assert_eq!(
        broker.ready_count().await,
        0,
        "a dead letter never returns to the jobs queue"
    );
}

async fn a_dead_letter_not_acked_comes_again<B: Backend>(broker: Arc<B>) {
    let job = reject_one(broker.as_ref()).await;
    let mut dead = broker
        .consume_dead_letters(1)
        .await
        .expect("consume dead letters");
    let first = next_dead(&mut dead).await;
    first.acker.requeue().await.expect("requeue");
    drop(first);
    let d = next_dead(&mut dead).await;
    assert_eq!(d.job, job);
    // Dropped unsettled with its stream (a consumer that died): back again.
    drop(d);
    drop(dead);
    let mut dead = broker.consume_dead_letters(1).await.expect("consume again");
    let d = next_dead(&mut dead).await;
    assert_eq!(d.job, job);
    d.acker.ack().await.expect("ack");
    assert_no_dead(&mut dead).await;
}

async fn a_job_over_the_delivery_limit_reaches_the_dead_letter_consumer<B: Backend>(broker: Arc<B>) {
    let jobs = new_jobs(1);
    let mut dead = broker
        .consume_dead_letters(4)
        .await
        .expect("consume dead letters");
    broker.publish_jobs(&jobs).await.expect("publish");
    let mut stream = broker.consume_jobs(1).await.expect("consume");
    for _ in 0..=JOB_DELIVERY_LIMIT {
        let delivery = next_delivery(&mut stream).await;
        delivery.acker.requeue().await.expect("requeue");
    }
    let d = next_dead(&mut dead).await;
    assert_eq!(d.job, jobs[0]);
    assert!(d.reason.starts_with("delivery_limit"), "{}", d.reason);
    d.acker.ack().await.expect("ack");
    assert_no_delivery(&mut stream).await;
}
