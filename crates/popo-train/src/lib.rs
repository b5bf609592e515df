//! popo-train: losses (one module per algorithm), the trainer loop, config, checkpoints, metrics and the built-in task.
//!
//! A step is one straight pass:
//! prompts -> rollouts (popo_model::generate) -> rewards (reward::Reward) -> algorithm.prepare (no graph)
//! -> per micro-batch: policy forward -> algorithm.loss -> backward -> optimizer step -> algorithm.after_step (EMA) -> metrics.

pub mod algo;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod correction;
pub mod data;
pub mod ema;
pub mod engine;
pub mod learner;
pub mod lm;
pub mod lora;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod policy;
pub mod predictor;
pub mod probe;
pub mod progress;
pub mod reward;
pub mod rollout;
pub mod rollouts;
pub mod scored;
pub mod setup;
pub mod sft;
pub mod state;
pub mod task;
pub mod tensorboard;
pub mod tiny;
pub mod trainer;
