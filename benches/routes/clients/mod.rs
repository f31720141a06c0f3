//! Plain clients of each system: what an application would write without
//! ferry. Their rates are the yardstick ferry is measured against.

pub mod amqp;
pub mod kafka;
pub mod redis;
