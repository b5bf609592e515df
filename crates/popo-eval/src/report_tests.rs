use super::*;
use crate::experiment::{test_spec, RunRecord};
use crate::summary::Tuning;
use popo_model::passk::PassAtK;
use popo_train::metrics::{names, RunLogger, StepMetrics};

/// Writes the files a finished run leaves, with chosen accuracies (and no pass@k, as runs
/// recorded before it existed).
fn fake_run(spec: &ExperimentSpec, name: &str, seed: u64, after: f64) {
    fake_cell(spec, name, seed, after, None)
}

/// A finished 3-step cell (`name` "base": a base cell) with an optional pass@k record: held-out
/// accuracy 20% before and `after` at the end, evaluated at steps 1, 2, 3 as `after` x 1/3, 2/3,
/// 1 (so the endpoint is 2/3 of `after`); per step 1 s of rollout and 3 s of update.
fn fake_cell(spec: &ExperimentSpec, name: &str, seed: u64, after: f64, pass: Option<PassAtK>) {
    fake_cell_from(spec, name, seed, 0.2, after, pass)
}

/// As `fake_cell`, with the held-out accuracy before training given.
fn fake_cell_from(
    spec: &ExperimentSpec,
    name: &str,
    seed: u64,
    before: f64,
    after: f64,
    pass: Option<PassAtK>,
) {
    let dir = match spec.runs.iter().find(|r| r.name == name) {
        Some(run) => spec.run_dir(run, seed),
        None => spec.base_dir(seed),
    };
    let mut log = RunLogger::create(&dir, false).unwrap();
    for step in 1..=3u64 {
        let mut m = StepMetrics::new(step);
        m.set(names::REWARD_MEAN, after * step as f64 / 3.0)
            .set(names::DELTA_NEG, -0.01 * step as f64)
            .set(names::DELTA_POS, 0.02)
            .set(names::TOKENS_BACKPROP, 100.0 * step as f64)
            .set(names::TIME_ROLLOUT, 1.0)
            .set(names::TIME_PREPARE, 0.5)
            .set(names::TIME_TRAIN, 2.5)
            .set(names::EVAL_ACCURACY, after * step as f64 / 3.0);
        log.log(&m).unwrap();
    }
    let rec = RunRecord {
        name: name.into(),
        seed,
        eval_before: Some(before),
        eval_after: Some(after),
        steps: 3,
        wall_s: 10.0 + seed as f64,
        pass_at_k: pass,
        warmup: None,
        popo: match seed {
            0 => "popo 0.1.0 (test)".into(),
            _ => String::new(),
        },
    };
    std::fs::write(
        dir.join(RUN_DONE_FILE),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
    let config = "[run]\neval_size = 200\n[optim]\nlr = 0.0002\n";
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// A grid of three seeds, reported on: popo (final 60 / 70 / 65%), grpo (40 / 46 / 42), raft
/// (62 / 66 / 64) and one ablation (50 each). POPO - grpo on the final evaluation: 20, 24, 23, mean 22.333, sd 2.082, se 1.202,
/// t = 18.58, half-width 4.3027 x 1.202 = 5.17, p = 1 - t / sqrt(2 + t^2) = 0.003; on the
/// endpoint (2/3 of each final): 13.3, 16.0, 15.3, mean 14.9. POPO - raft: -2, 4, 1: [-6.5, +8.5].
fn three_seed_grid() -> (tempfile::TempDir, ExperimentSpec, Summary) {
    three_seed_grid_with(|s| s.shared_warmup = true)
}

/// `three_seed_grid` with its spec changed by `adjust` before the runs are made.
fn three_seed_grid_with(
    adjust: impl FnOnce(&mut ExperimentSpec),
) -> (tempfile::TempDir, ExperimentSpec, Summary) {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = test_spec(tmp.path());
    s.seeds = vec![0, 1, 2];
    adjust(&mut s);
    s.validate().unwrap();
    for (name, acc) in [
        ("popo", [0.60, 0.70, 0.65]),
        ("grpo", [0.40, 0.46, 0.42]),
        ("raft", [0.62, 0.66, 0.64]),
        ("popo-alpha0", [0.5, 0.5, 0.5]),
    ] {
        for (seed, a) in acc.into_iter().enumerate() {
            fake_run(&s, name, seed as u64, a);
        }
    }
    let sum = write_report(&s, "popo experiment x.toml").unwrap();
    (tmp, s, sum)
}

/// Per-variant numbers, tables, summary.json, wall time, cells not run and plots.
#[test]
fn report_aggregates_seeds_into_tables_and_summary() {
    let (tmp, s, sum) = three_seed_grid();
    let popo = &sum.variants[0];
    let acc = popo.accuracy_after.unwrap();
    assert!((acc.mean - 0.65).abs() < 1e-12 && (acc.std - 0.05).abs() < 1e-12);
    assert_eq!(acc.n, 3);
    let end = popo.accuracy_last3.unwrap();
    assert!((end.mean - 0.65 * 2.0 / 3.0).abs() < 1e-12);
    let neg = popo.delta_neg.unwrap();
    assert!((neg.mean + 0.02).abs() < 1e-12 && neg.std < 1e-12);
    assert!((popo.tokens_backprop_per_step.unwrap().mean - 200.0).abs() < 1e-9);
    assert!((popo.rollout_s.unwrap().mean - 3.0).abs() < 1e-12);
    assert!((popo.train_s.unwrap().mean - 9.0).abs() < 1e-12);
    let change = popo.accuracy_change.unwrap(); // after .6, .7, .65, before .2 each
    assert!((change.mean - 0.45).abs() < 1e-12 && change.n == 3);
    assert!((popo.wall_s.unwrap().mean - 11.0).abs() < 1e-12);
    assert_eq!((popo.lr, popo.eval_problems), (Some(2e-4), Some(200)));
    assert_eq!(popo.per_seed.len(), 3);

    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains(
            "| popo | popo | - | 3 | 20.0 +- 0.0 | 65.0 +- 5.0 | 43.3 +- 3.3 | +45.0 +- 5.0 | \
             -0.0200 +- 0.0000 | 0.0200 +- 0.0000 | 200 +- 0 | 3 +- 0 | 9 +- 0 | 11.0 +- 1.0 |"
        ),
        "{md}"
    );
    assert!(md.contains("## ablations") && md.contains("`algo.alpha=0.0`"));
    let ablations = md.split("## ablations").nth(1).unwrap();
    assert!(ablations.contains("| popo | popo | - |"), "{ablations}");
    let per_seed = md.split("## Per seed").nth(1).unwrap();
    assert!(
        per_seed.contains("| run | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|\n| start | 20.0 | 20.0 | 20.0 |\n| popo | 60.0 / 40.0 | 70.0 / 46.7 | 65.0 / 43.3 |"),
        "{per_seed}"
    );
    assert!(md.contains("popo experiment x.toml"));
    // Seed 0's four cells recorded a build, seeds 1 and 2's eight none.
    assert!(
        md.contains(
            "Builds of the finished cells: 8 recorded none (made before builds were recorded); \
             `popo 0.1.0 (test)` made 4."
        ),
        "{md}"
    );
    let back: Summary =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap())
            .unwrap();
    // JSON keeps every number to its last digit or two: compare what the report reads.
    assert_eq!(
        (back.verdicts, back.verdict_method),
        (sum.verdicts.clone(), sum.verdict_method.clone())
    );
    assert_eq!(back.variants.len(), 4);
    assert_eq!(back.variants[1].per_seed.len(), 3);
    assert!((back.variants[1].accuracy_after.unwrap().mean - 0.4266666666666667).abs() < 1e-12);
    // Runs recorded before pass@k existed still report, without its table or base.
    assert!(sum.base.is_none() && sum.variants.iter().all(|v| v.pass_at_k.is_none()));
    assert!(!md.contains("## pass@k"));
    assert!(
        md.contains("Wall time: 12 trained runs, 132 s (0.0 h)"),
        "{md}"
    );
    assert!(!md.contains("Not run ("), "{md}");
    std::fs::remove_file(s.run_dir(&s.runs[3], 1).join(RUN_DONE_FILE)).unwrap();
    write_report(&s, "popo experiment x.toml").unwrap();
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains("Not run (1 of 12 trained cells; the same command runs them, finished ones are skipped): popo-alpha0 s1."),
        "{md}"
    );
    for f in [
        "algorithms_eval_accuracy.svg",
        "algorithms_eval_accuracy.png",
        "ablations_train_reward_mean.png",
    ] {
        assert!(tmp.path().join("plots").join(f).is_file(), "{f}");
    }
}

/// The verdicts and the paragraph above them, on the grid of `three_seed_grid`.
#[test]
fn report_states_the_paired_verdicts() {
    let (tmp, _s, sum) = three_seed_grid();
    assert_eq!(sum.verdicts.len(), 5);
    assert!(
        sum.verdicts[0].starts_with(
            "**1. POPO matches or beats the GRPO family (GRPO, Dr. GRPO, DAPO): holds (above \
             `grpo`).** At the shared settings (tuned on POPO): vs `grpo`: endpoint POPO - grpo: \
             +14.9 points (seeds 0, 1, 2: +13.3, +16.0, +15.3; 95% CI [+11.4, +18.3], paired t = \
             18.58, p = 0.003, n = 3)"
        ) && sum.verdicts[0].contains(
            "final evaluation: +22.3 points (seeds 0, 1, 2: +20.0, +24.0, +23.0; 95% CI [+17.2, \
             +27.5], paired t = 18.58, p = 0.003, n = 3)"
        ),
        "{}",
        sum.verdicts[0]
    );
    assert!(
        sum.verdicts[3].contains("(POPO vs RAFT): not shown (not separated).**"),
        "{}",
        sum.verdicts[3]
    );
    assert!(
        sum.verdicts[2].contains("`popo-alpha0` 33.3%"),
        "{}",
        sum.verdicts[2]
    );
    assert!(
        sum.verdict_method
            .contains("(held-out accuracy at the start 20.0 / 20.0 / 20.0% on seeds 0 / 1 / 2)")
            && sum.verdict_method.contains(
                "200 held-out problems has a binomial standard error of sqrt(p (1 - p) / 200): \
                 3.5 points at p = 50% (its largest), 3.4 at POPO's final 65.0%"
            )
            && sum.verdict_method.contains("tuned on POPO alone"),
        "{}",
        sum.verdict_method
    );
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(md.contains(&sum.verdict_method), "{md}");
}

/// A grid without a warm-up whose methods each ran at their own swept learning rate says so,
/// and says nothing of settings tuned on POPO.
#[test]
fn report_states_per_method_tuning_and_no_warm_up() {
    let (tmp, _s, sum) = three_seed_grid_with(|s| s.tuning = Tuning::PerMethod);
    let note = &sum.verdict_method;
    assert!(
        note.contains("starts from the starting model with that seed")
            && note.contains("at the learning rate its own sweep chose")
            && !note.contains("warm-up")
            && !note.contains("held-out accuracy at the start"),
        "{note}"
    );
    for v in [&sum.verdicts[0], &sum.verdicts[3]] {
        assert!(
            v.contains("** Each at its own learning rate: vs `")
                || v.contains("** Each at its own learning rate: endpoint"),
            "{v}"
        );
    }
    let all = sum.verdicts.join("\n") + note;
    assert!(!all.contains("tuned on POPO"), "{all}");
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains("the start is the starting model, shared by the seed's runs"),
        "{md}"
    );
    assert!(!md.contains("warm-up"), "{md}");
}

/// pass@k over seeds per k in a table and a pass@k-vs-k plot per group, the base model first;
/// a variant whose seeds did not all measure it averages the ones that did.
#[test]
fn report_has_a_pass_at_k_table_and_plot_with_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let s = test_spec(tmp.path());
    // n = 4 samples of 2 problems; counts chosen per cell.
    let pass = |counts: &[usize]| Some(PassAtK::from_counts(4, counts));
    for seed in [0, 1] {
        fake_cell(&s, BASE_NAME, seed, 0.2, pass(&[1, 0]));
        fake_cell(&s, "popo", seed, 0.6, pass(&[4, 0]));
        fake_cell(&s, "grpo", seed, 0.4, pass(&[[1, 2][seed as usize], 1]));
    }
    fake_cell(&s, "raft", 0, 0.5, pass(&[2, 2]));
    fake_run(&s, "raft", 1, 0.5);
    let sum = write_report(&s, "popo experiment x.toml").unwrap();
    let base = sum.base.as_ref().unwrap();
    assert_eq!((base.name.as_str(), base.seeds.len()), (BASE_NAME, 2));
    let bp = base.pass_at_k.as_ref().unwrap();
    // One of 4 right on one problem: pass@1 = 1/8, pass@2 = 1/4, pass@4 = 1/2.
    let ks: Vec<(usize, f64)> = bp.pass_at_k.iter().map(|(k, st)| (*k, st.mean)).collect();
    assert_eq!(ks, [(1, 0.125), (2, 0.25), (4, 0.5)]);
    let g = sum.variants[1].pass_at_k.as_ref().unwrap(); // grpo: c = 1 or 2, then 1
    let (p1, p2): (f64, f64) = (0.25 + 0.25, 0.5 + 0.25); // pass@1 of each seed, summed over problems
    let want = (
        (p1 / 2.0 + p2 / 2.0) / 2.0,
        (p2 / 2.0 - p1 / 2.0).abs() / 2f64.sqrt(),
    );
    assert!((g.pass_at_k[0].1.mean - want.0).abs() < 1e-12);
    assert!((g.pass_at_k[0].1.std - want.1).abs() < 1e-12);
    assert_eq!(g.n, 4);
    assert_eq!(sum.variants[2].pass_at_k.as_ref().unwrap().avg_at_n.n, 1);
    assert!(sum.variants[3].pass_at_k.is_none()); // the ablation has no record
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    let table = md.split("## pass@k").nth(1).unwrap();
    assert!(
        table.contains("| run | group | seeds | avg@4 | pass@1 | pass@2 | pass@4 |"),
        "{table}"
    );
    assert!(
        table.contains(
            "| base | base | 2 | 12.5 +- 0.0 | 12.5 +- 0.0 | 25.0 +- 0.0 | 50.0 +- 0.0 |"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "| popo | algorithms | 2 | 50.0 +- 0.0 | 50.0 +- 0.0 | 50.0 +- 0.0 | 50.0 +- 0.0 |"
        ),
        "{table}"
    );
    assert!(!table.contains("popo-alpha0"));
    for f in ["algorithms_pass_at_k.svg", "algorithms_pass_at_k.png"] {
        assert!(tmp.path().join("plots").join(f).is_file(), "{f}");
    }
    // The ablations measured nothing: the base alone makes no plot.
    assert!(!tmp.path().join("plots/ablations_pass_at_k.svg").exists());
    let svg = std::fs::read_to_string(tmp.path().join("plots/algorithms_pass_at_k.svg")).unwrap();
    // base, popo, grpo, raft: a curve of three points (k = 1, 2, 4) in each of the first
    // four colours.
    for color in ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728"] {
        let curve = svg.lines().any(|l| {
            l.starts_with("<polyline")
                && l.contains(&format!("stroke=\"{color}\""))
                && l.split("points=\"")
                    .nth(1)
                    .is_some_and(|p| p.split_whitespace().count() == 3)
        });
        assert!(curve, "no 3-point curve in {color}");
    }
    let back: Summary =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap())
            .unwrap();
    let ks = |v: &VariantSummary| v.pass_at_k.as_ref().map(|p| p.pass_at_k.len());
    assert_eq!(back.base.as_ref().and_then(ks), Some(3));
    assert_eq!(
        back.variants.iter().map(ks).collect::<Vec<_>>(),
        [Some(3), Some(3), Some(3), None]
    );
}

/// Base cells count apart from the trained runs in the wall time.
#[test]
fn wall_time_counts_trained_runs_and_base_cells_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = test_spec(tmp.path());
    for seed in [0, 1] {
        fake_cell(
            &s,
            BASE_NAME,
            seed,
            0.2,
            Some(PassAtK::from_counts(4, &[1, 0])),
        );
        fake_run(&s, "popo", seed, 0.6);
    }
    write_report(&s, "x").unwrap();
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains("Wall time: 2 trained runs and 2 base cells, 42 s (0.0 h)")
            && md.contains("Not run (6 of 8 trained cells;"),
        "{md}"
    );
}

/// A seed whose runs start from different models (one re-made on another machine) is named in
/// the report with each run's start; a grid whose seeds each have one start says nothing.
#[test]
fn report_names_a_seed_whose_runs_start_apart() {
    let (tmp, s, _) = three_seed_grid();
    let report = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(!report.contains("Starts that differ"), "{report}");
    fake_cell_from(&s, "grpo", 2, 0.3, 0.4, None);
    write_report(&s, "popo experiment x.toml").unwrap();
    let report = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        report.contains("seed 2: popo 20.0%, grpo 30.0%, raft 20.0%, popo-alpha0 20.0%"),
        "{report}"
    );
    assert!(
        !report.contains("seed 0:") && !report.contains("seed 1:"),
        "{report}"
    );
}

/// The title names the data a grid trains on, as its runs' configs resolved it: the built-in
/// task, or the data file (set by the grid, a base recipe or a run alike).
#[test]
fn the_title_names_the_training_data() {
    let mut sum = Summary {
        variants: Vec::new(),
        base: None,
        verdict_method: String::new(),
        verdicts: Vec::new(),
    };
    assert_eq!(task_name(&sum), "the built-in task");
    let mut v = VariantSummary::empty("popo", "popo", "");
    sum.variants.push(v.clone());
    assert_eq!(task_name(&sum), "the built-in task");
    v.data = Some("~/.cache/popo/data/chain_sum/train.jsonl".into());
    sum.variants.push(v.clone());
    assert_eq!(task_name(&sum), "`chain_sum/train.jsonl`");
    v.data = Some("train.jsonl".into());
    sum.variants = vec![v];
    assert_eq!(task_name(&sum), "`train.jsonl`");
    // And from a run's config.toml through the report.
    let tmp = tempfile::tempdir().unwrap();
    let s = test_spec(tmp.path());
    fake_run(&s, "popo", 0, 0.5);
    let dir = s.run_dir(&s.runs[0], 0);
    let config = "[optim]\nlr = 1e-5\n[data]\npath = \"/d/gsm8k/train.jsonl\"\n";
    std::fs::write(dir.join("config.toml"), config).unwrap();
    write_report(&s, "popo experiment x.toml").unwrap();
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.starts_with("# POPO vs baselines on `gsm8k/train.jsonl`\n"),
        "{md}"
    );
}

/// Groups interleaved in the grid (GRPO, its learning rates, RAFT, its learning rates) get one
/// table each, holding all their runs.
#[test]
fn interleaved_groups_get_one_table_each() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = test_spec(tmp.path());
    let at_lr = |run: &RunSpec| RunSpec {
        name: format!("{}-lr1e-4", run.name),
        group: "learning rates".into(),
        set: vec!["optim.lr=1e-4".into()],
        ..run.clone()
    };
    let (grpo_lr, raft_lr) = (at_lr(&s.runs[1]), at_lr(&s.runs[2]));
    s.runs.insert(2, grpo_lr); // popo, grpo, grpo-lr1e-4, raft, raft-lr1e-4, popo-alpha0
    s.runs.insert(4, raft_lr);
    s.validate().unwrap();
    for run in s.runs.clone() {
        for seed in [0, 1] {
            fake_run(&s, &run.name, seed, 0.5);
        }
    }
    write_report(&s, "popo experiment x.toml").unwrap();
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    for heading in [
        "\n## algorithms\n",
        "\n## learning rates\n",
        "\n## ablations\n",
    ] {
        assert_eq!(md.matches(heading).count(), 1, "{heading:?} in {md}");
    }
    let lrs = md.split("\n## learning rates\n").nth(1).unwrap();
    let lrs = lrs.split("\n## ").next().unwrap();
    assert!(
        lrs.contains("| grpo-lr1e-4 |") && lrs.contains("| raft-lr1e-4 |"),
        "{lrs}"
    );
}
