from forge.progress import Milestones


def test_milestones_fall_every_tenth_and_at_the_end():
    m = Milestones(95)
    due = [n for n in range(1, 96) if m.due(n)]
    assert due == [9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 95]


def test_milestones_survive_big_jumps_and_tiny_totals():
    m = Milestones(1000)
    assert m.due(450) and not m.due(460) and m.due(500) and m.due(1000)
    small = Milestones(3, parts=20)
    assert [n for n in (1, 2, 3) if small.due(n)] == [1, 2, 3]
