"""GFlowNets: DAG environments, balance losses, exact evaluation, OC-GFN pretraining and adaptation.

Importing this package registers the `gfn` agent (for `rlpt train agents/gfn/*.yaml`) and the Gymnasium ids
`rlpt/HyperGrid-v0` and `rlpt/BitSeq-v0`. See docs/gfn.md.
"""

from rlpt.gfn.envs import BitSeq, DAGEnv, GFNGymEnv, HyperGrid, make_dag_env, make_reward
from rlpt.gfn.evaluate import exact_metrics, terminal_distribution, visit_probabilities
from rlpt.gfn.gflownet import GFlowNet, GFNAgent, GFNAgentConfig, GFNModel, sample_trajectories
from rlpt.gfn.losses import Terms, detailed_balance, subtrajectory_balance, trajectory_balance
from rlpt.gfn.ocgfn import OCGFN, AmortizedTrainer, OCGFNConfig, convert_exact, convert_exact_many, pretrain

__all__ = ["OCGFN", "AmortizedTrainer", "BitSeq", "DAGEnv", "GFNAgent", "GFNAgentConfig", "GFNGymEnv", "GFNModel",
           "GFlowNet", "HyperGrid", "OCGFNConfig", "Terms", "convert_exact", "convert_exact_many", "detailed_balance",
           "exact_metrics", "make_dag_env", "make_reward", "pretrain", "sample_trajectories", "subtrajectory_balance",
           "terminal_distribution", "trajectory_balance", "visit_probabilities"]
