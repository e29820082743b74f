//! Helpers of `doc_examples.rs`: finding the examples ([`extract`]) and
//! what they run against ([`fixtures`]).

pub mod extract;
pub mod fixtures;
