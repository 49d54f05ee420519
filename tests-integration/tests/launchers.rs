//! A program started by another launcher (Slurm's srun, Open MPI's mpirun, MPICH's mpiexec,
//! torchrun) in a way boad cannot join must say so, naming the launcher and what to do, instead of
//! running each process as a job of one rank (N silent one-rank jobs give wrong results).
//! Runs as any user.

use std::process::Command;

#[test]
fn another_launchers_variables_without_boadrun_are_an_error_naming_it() {
    for (vars, names) in [
        (
            &[("SLURM_STEP_NUM_TASKS", "9"), ("SLURM_PROCID", "3")][..],
            ["Slurm's srun", "srun --mpi=pmi2"],
        ),
        (
            &[("SLURM_STEP_NUM_TASKS", "9"), ("PMIX_RANK", "3")][..],
            ["Slurm's srun", "PMIx"],
        ),
        (
            &[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "0")][..],
            ["Open MPI's mpirun", "start the program with boadrun"],
        ),
        (
            &[("PMI_SIZE", "2"), ("PMI_RANK", "1")][..],
            ["PMI launcher", "PMI_FD"],
        ),
        (
            &[("WORLD_SIZE", "8"), ("RANK", "5")][..],
            ["env://", "MASTER_ADDR, MASTER_PORT are not"],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_boad-check"))
            .args(["random", "3"])
            .env_remove("BOAD_SIZE")
            .envs(vars.iter().copied())
            .output()
            .expect("run boad-check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {err}");
        assert!(names.iter().all(|n| err.contains(n)), "{vars:?}: {err}");
    }
    // A launcher's job of one process is a job of one rank, as without any launcher.
    let out = Command::new(env!("CARGO_BIN_EXE_boad-check"))
        .args(["random", "3"])
        .env_remove("BOAD_SIZE")
        .env("WORLD_SIZE", "1")
        .output()
        .expect("run boad-check");
    assert!(out.status.success(), "{out:?}");
}

/// srun --mpi=pmi2's variables with a `PMI_FD` that is not Slurm's socket (here /dev/null), or
/// with `PMI2_SUN_PATH` but without `PMI_JOBID`: an error naming Slurm and what is wrong, never a job of one rank.
#[test]
fn slurm_pmi2_variables_that_cannot_be_used_are_an_error_naming_slurm() {
    let slurm = [
        ("SLURM_JOB_ID", "12"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_STEP_NUM_TASKS", "2"),
        ("PMI_FD", "0"),
        ("PMI_RANK", "1"),
        ("PMI_SIZE", "2"),
    ];
    for (extra, names) in [
        (
            &[("PMI_JOBID", "12.0")][..],
            &[
                "Slurm's srun (PMI-2)",
                "PMI_FD=0 cannot be used: not a socket",
            ][..],
        ),
        (
            &[("PMI2_SUN_PATH", "/var/spool/slurmd/sock.pmi2.12.0")][..],
            &["PMI_JOBID", "missing"][..],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_boad-check"))
            .args(["random", "3"])
            .env_remove("BOAD_SIZE")
            .envs(slurm.iter().chain(extra).copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run boad-check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(names.iter().all(|n| err.contains(n)), "{extra:?}: {err}");
    }
}
