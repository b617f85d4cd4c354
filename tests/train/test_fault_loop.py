"""The short version of `bench/fault_loop.py`: `run.py train` killed with SIGKILL while a
checkpoint is being written, restarted each time, and compared with a run never killed."""

from bench.fault_loop import fault_loop


def test_kill_9_during_saves_loses_nothing_but_the_steps_since_the_last_save():
    report = fault_loop(kills=2, steps=25, during_saves=True, seed=1)
    assert report["kills"] == report["kills_while_a_checkpoint_was_being_written"] == 2, report
    assert report["every_restart_resumed_from_the_newest_finished_save"], report
    assert all(step is not None and step > 0 for step in report["resumed_from_steps"]), report  # each resumed
    assert report["parameters_and_optimizer_state_bitwise_equal"] and report["data_iterator_position_equal"], report
    assert report["every_step_trained"], report
