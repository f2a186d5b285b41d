//! Object-store client layer.
pub mod credentials;
pub mod encode;
pub mod sign;
