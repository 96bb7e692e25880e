//! Heal actions: how a target is restarted. One file per backend.

pub mod command;
pub mod docker;
pub mod stop;
