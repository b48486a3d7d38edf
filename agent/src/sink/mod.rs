//! Where records go. Each sink runs as its own task behind a bounded queue, so a slow sink
//! never blocks the probes: when its queue is full, records are dropped and counted per sink.

pub mod jsonl;
pub mod otlp;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc;

use crate::record::Record;

/// One sink's queue and its drop counter.
#[derive(Clone)]
struct Queue {
    name: &'static str,
    tx: mpsc::Sender<Arc<Record>>,
    dropped: Arc<AtomicU64>,
}

/// Hands each record to every sink without waiting. Clones share the queues; a sink's queue
/// closes when every clone is gone.
#[derive(Clone, Default)]
pub struct Fanout {
    queues: Vec<Queue>,
}

impl Fanout {
    /// Adds a sink with a queue of `capacity` records; returns its receiving end.
    pub fn add(&mut self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Record>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.queues.push(Queue {
            name,
            tx,
            dropped: Arc::default(),
        });
        rx
    }

    /// Queues a record for every sink; a full queue drops it (counted).
    pub fn send(&self, record: Record) {
        let record = Arc::new(record);
        for q in &self.queues {
            if q.tx.try_send(Arc::clone(&record)).is_err() {
                q.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a record for every sink, waiting for room (shutdown and readiness records, which
    /// must not be lost).
    pub async fn send_wait(&self, record: Record) {
        let record = Arc::new(record);
        for q in &self.queues {
            let _ = q.tx.send(Arc::clone(&record)).await;
        }
    }

    /// Records dropped per sink because its queue was full.
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        self.queues
            .iter()
            .map(|q| (q.name, q.dropped.load(Ordering::Relaxed)))
            .collect()
    }
}
