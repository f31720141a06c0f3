//! Redis: sources for streams, lists, pub/sub and keyspace notifications,
//! and a sink for every data type.

pub(crate) mod access;
pub(crate) mod commands;
pub mod config;
pub(crate) mod connection;
pub(crate) mod errors;
pub(crate) mod exactly_once;
pub(crate) mod guards;
pub(crate) mod key_value;
pub(crate) mod named;
pub(crate) mod replies;
pub(crate) mod script;
pub mod sink;
pub(crate) mod slots;
pub(crate) mod source;
pub(crate) mod stream_entry;
pub mod sync;

pub use config::{
    RedisKeyspaceSourceConfig, RedisListSourceConfig, RedisPubSubSourceConfig, RedisSinkConfig,
    RedisStreamSourceConfig,
};
pub use sink::RedisSink;
