//! keytrail's agent as a library: one module per stage of the data flow.
//!
//! `probes` (load/attach) -> `events` (ring buffer decode) -> `procs` / `workload` (who) ->
//! `files` (file opens) and `env` (environment variables) -> access records -> `sink` (JSON
//! lines). `watch` compiles the watch rules for both the kernel prefilter and the exact match;
//! `libc` finds the libcs the getenv probe attaches to and `elf` reads where in them;
//! `agent` wires the stages together.

pub mod agent;
pub mod budgets;
pub mod classify;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod credential;
pub mod dedup;
pub mod elf;
pub mod env;
pub mod env_paths;
pub mod events;
pub mod files;
pub mod fingerprint_key;
pub mod homes;
pub mod inspect;
pub mod inventory;
pub mod k8s;
pub mod kernel_offsets;
pub mod libc;
pub mod net;
pub mod openpath;
pub mod probes;
pub mod procs;
pub mod record;
pub mod report;
pub mod rootfs;
pub mod roots;
pub mod sink;
pub mod stats;
pub mod watch;
pub mod wire;
pub mod workload;
