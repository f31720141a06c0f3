//! Redis: sources for streams, lists, pub/sub and keyspace notifications,
//! and a sink for every data type.

pub mod access;
pub mod commands;
pub mod config;
pub mod errors;
pub mod exactly_once;
pub mod key_value;
pub mod replies;
pub mod script;
pub mod sink;
pub mod source;
pub mod stream_entry;
pub mod sync;

pub use config::{
    RedisKeyspaceSourceConfig, RedisListSourceConfig, RedisPubSubSourceConfig, RedisSinkConfig,
    RedisStreamSourceConfig,
};
pub use sink::RedisSink;
