#![allow(missing_docs)]
use std::path::PathBuf;
pub enum LogVerdict { Clean, FailMatched { line: u64, text: String, context: Vec<String>, pattern: String }, PassMissing { pattern: String }, Unreadable(String) }
pub fn scan_logs(_paths: &[PathBuf], _patterns: &crate::flow::Patterns) -> LogVerdict { LogVerdict::Clean }
