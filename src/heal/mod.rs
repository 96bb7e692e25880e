//! Heal actions: how a target is restarted. One file per backend.

pub mod command;
pub mod docker;
pub mod report;
pub mod stop;
