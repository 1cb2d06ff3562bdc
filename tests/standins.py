"""Stand-ins shared by several test files (import them as ``from standins import ...``)."""


class FixedProbabilityUsers:
    """A stand-in population whose users prefer the trained reply with the probability written in it."""

    def simulated_user(self, user_id, noise):
        return self

    def task(self, task_id):
        return task_id

    def utility(self, replies, tasks):
        return [float(replies[0]), float(replies[1])]

    def choice_probability(self, utility_after, utility_before):
        return utility_after
