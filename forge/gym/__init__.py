"""The network gym: 42 typed tools over one scenario, with the Experiment Model as physics.

See docs/gym.md. Main entry points:

    NetworkEnv(scenario, seed=0, model=...)   -> env.step({"tool": ..., "args": {...}})
    CachedModel(model)                        shared prediction cache
    TOOLS, openai_tools()                     the catalogue
    Trajectory, Task, TaskGoal                the trajectory contract
"""

from forge.gym.catalogue import BY_NAME, TOOLS, ToolSpec, openai_tools
from forge.gym.env import CachedModel, NetworkEnv, Observation
from forge.gym.goals import AnswerGoal, Condition, TaskGoal, evaluate, match_answer
from forge.gym.handlers import ToolError
from forge.gym.trajectory import EnvSpec, Message, Provenance, Task, Trajectory

__all__ = ["BY_NAME", "TOOLS", "AnswerGoal", "CachedModel", "Condition", "EnvSpec", "Message",
           "NetworkEnv", "Observation", "Provenance", "Task", "TaskGoal", "ToolError",
           "ToolSpec", "Trajectory", "evaluate", "match_answer", "openai_tools"]
