//! Redis: a sink that writes keys, hashes and stream entries in pipelined
//! batches.

pub mod config;
pub mod mapping;
pub mod sink;

pub use config::RedisSinkConfig;
pub use sink::RedisSink;
