//! Where records go. Each sink runs as its own task behind a bounded channel, so a slow sink
//! never blocks the probes: when its queue is full, records are dropped and counted.

pub mod jsonl;
