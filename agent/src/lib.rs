//! keytrail's agent as a library: one module per stage of the data flow.
//!
//! `probes` (load/attach) -> `events` (ring buffer decode) -> `pipeline` (one task:
//! `procs` / `workload` who; `files`, `env`, `net` what and where; `correlate` uses) -> `sink`
//! (JSON lines, OTLP) and `inventory`. `watch` compiles the watch rules for both the kernel
//! prefilter and the exact match, `homes` and `env_paths` extend it at run time; `openpath`,
//! `roots`, `rootfs` and `inspect` find and read what an open names; `libc` finds the
//! libraries uprobes attach to and `elf` reads where in them; `probe_requests` carries what the
//! pipeline asks of the probes; `agent` wires the stages together.

pub mod agent;
pub mod budgets;
pub mod classify;
pub mod cli;
pub mod config;
pub mod conn_folds;
pub mod correlate;
pub mod credential;
pub mod dedup;
pub mod elf;
pub mod env;
pub mod env_paths;
pub mod events;
pub mod file_reads;
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
pub mod pipeline;
pub mod probe_point;
pub mod probe_requests;
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
