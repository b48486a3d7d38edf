//! Empty on purpose: the kernel programs live in the `keytrail` binary target (src/main.rs).
#![no_std]
