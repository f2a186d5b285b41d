//! Mount configuration: SOURCE, options, credentials.
