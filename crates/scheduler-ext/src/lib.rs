//! scheduler-ext
