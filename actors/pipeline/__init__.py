"""The pipeline: the stages a job passes through, the messages between them, and the tree of tasks
that `ActorSystem` supervises."""
