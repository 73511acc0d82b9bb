//! Consistency metrics: CQS, CHARIS colour score.
