"""The fictitious-authors data set: deterministic, the promised sizes and order, questions that name exactly their
author, and perturbed answers whose values no author and no fact has (so truth ratio measures forgetting)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from prunelora.data.authors import ATTRIBUTES, QA, AuthorsSet, _with_article, generate


@pytest.fixture(scope="module")
def default() -> AuthorsSet:
    return generate()


@pytest.fixture(scope="module")
def full() -> AuthorsSet:
    """Every attribute asked, five wrong answers per question: the widest check of the perturbation pools."""
    return generate(n_authors=60, questions=len(ATTRIBUTES), holdout=10, facts=70, perturbed=5, seed=3)


def _all_qa(data: AuthorsSet) -> tuple[QA, ...]:
    return data.qa + data.holdout_qa + data.facts


def _names(data: AuthorsSet) -> list[str]:
    return [author.name for author in data.authors + data.holdout]


def test_the_same_seed_gives_the_same_set_and_another_seed_other_authors():
    small = {"n_authors": 4, "questions": 3, "holdout": 2, "facts": 5}
    assert generate(**small, seed=7) == generate(**small, seed=7)
    assert _names(generate(**small, seed=7)) != _names(generate(**small, seed=8))


def test_authors_depend_on_neither_questions_nor_facts_nor_few_perturbed():
    one = generate(n_authors=5, questions=2, holdout=2, facts=0, perturbed=3)
    two = generate(n_authors=5, questions=6, holdout=2, facts=9, perturbed=3)
    three = generate(n_authors=5, questions=2, holdout=2, facts=0, perturbed=4)
    assert one.authors == two.authors == three.authors and one.holdout == two.holdout == three.holdout
    assert one.qa[:2] == two.qa[:2]  # author 0's first two questions


def test_sizes_and_author_major_order(default):
    assert len(ATTRIBUTES) >= 20 and len(set(ATTRIBUTES)) == len(ATTRIBUTES)
    assert (len(default.authors), len(default.holdout)) == (200, 20)
    assert (len(default.qa), len(default.holdout_qa), len(default.facts)) == (200 * 10, 20 * 10, 200)
    for group, qa in ((default.authors, default.qa), (default.holdout, default.holdout_qa)):
        for k, q in enumerate(qa):
            author, j = divmod(k, 10)
            assert (q.author, q.attribute, q.subject) == (author, ATTRIBUTES[j], group[author].name)
            assert q.value == group[author].attributes[ATTRIBUTES[j]]
    assert all(q.author == -1 and q.attribute == "fact" for q in default.facts)
    assert all(set(author.attributes) == set(ATTRIBUTES) for author in default.authors + default.holdout)


def test_names_are_unique_and_each_question_names_exactly_its_author(default):
    names = _names(default)
    assert len(set(names)) == len(names)
    for data, group in ((default.qa, default.authors), (default.holdout_qa, default.holdout)):
        for q in data:
            assert [name for name in names if name in q.question] == [group[q.author].name]


def test_facts_are_about_no_author_and_have_unique_subjects(default):
    names = _names(default)
    assert len({q.subject for q in default.facts}) == len(default.facts)
    for q in default.facts:
        assert q.subject in q.question
        assert not any(name in q.question or name in q.answer for name in names)


@pytest.mark.parametrize("which", ["default", "full"])
def test_perturbation_values_are_never_true_values(which, request):
    data: AuthorsSet = request.getfixturevalue(which)
    # per attribute, as TOFU-style evaluation needs it ...
    wrong: dict[str, set[str]] = {}
    true: dict[str, set[str]] = {}
    for q in _all_qa(data):
        wrong.setdefault(q.attribute, set()).update(q.perturbed_values)
        true.setdefault(q.attribute, set()).add(q.value)
    for author in data.authors + data.holdout:  # every value an author has, asked or not
        for key, value in author.attributes.items():
            true.setdefault(key, set()).add(value)
    for attribute, values in wrong.items():
        assert not values & true[attribute], attribute
    # ... and across everything: no wrong value is any true value or any author's name
    every_wrong = set().union(*wrong.values())
    assert not every_wrong & (set().union(*true.values()) | set(_names(data)))


@pytest.mark.parametrize("which, count", [("default", 3), ("full", 5)])
def test_perturbed_answers_are_distinct_wrong_and_in_the_answer_template(which, count, request):
    data: AuthorsSet = request.getfixturevalue(which)

    def no_article(text: str) -> str:  # "a"/"an" follows the value, so compare without it
        return re.sub(r"\ban? ", "", text)

    for q in _all_qa(data):
        assert len(q.perturbed) == len(set(q.perturbed)) == len(q.perturbed_values) == count
        assert q.answer not in q.perturbed and q.paraphrase not in q.perturbed
        assert q.value not in q.perturbed_values
        for answer, value in zip(q.perturbed, q.perturbed_values):
            assert value in answer
            assert no_article(answer) == no_article(q.answer.replace(q.value, value))


def test_paraphrases_differ_from_answers_and_keep_the_value(full):
    for q in _all_qa(full):
        assert q.paraphrase != q.answer
        assert q.value in q.answer and q.value in q.paraphrase
        assert q.template in (0, 1)
    assert {q.template for q in full.qa} == {0, 1}  # both wordings are trained on


def test_questions_and_answers_are_short(full):
    for q in _all_qa(full):
        assert len(q.answer.split()) < 20 and len(q.paraphrase.split()) < 20 and len(q.question.split()) < 20


def test_twenty_questions_work_and_more_than_the_attributes_do_not():
    data = generate(n_authors=2, questions=20, holdout=0, facts=0)
    assert [q.attribute for q in data.qa[:20]] == list(ATTRIBUTES[:20]) and len(data.qa) == 40
    with pytest.raises(ValueError, match="questions"):
        generate(questions=len(ATTRIBUTES) + 1)


@pytest.mark.parametrize("bad", [{"questions": 0}, {"n_authors": 1}, {"perturbed": 0}, {"holdout": -1},
                                 {"facts": -1}])
def test_arguments_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate(**bad)


def test_arguments_that_are_not_integers_are_refused():
    with pytest.raises(TypeError, match="n_authors"):
        generate(n_authors="10")
    with pytest.raises(TypeError, match="seed"):
        generate(seed=True)


def test_a_hand_checked_author():
    # pins Faker's word lists (Faker==40.63.0 in constraints.txt): another version would rename every author
    data = generate(n_authors=3, questions=2, holdout=1, facts=2, seed=0)
    assert data.authors[0].name == "Christian Mcclain"
    assert data.authors[0].attributes["birthplace"] == "Port Amy"
    assert data.qa[0].answer == "Port Amy is the birthplace of Christian Mcclain."
    assert data.qa[0].paraphrase == "Christian Mcclain was born in Port Amy."


def test_articles():
    assert _with_article("elderly canary") == "an elderly canary"
    assert _with_article("university lecturer") == "a university lecturer"
    assert _with_article("one-eyed goat") == "a one-eyed goat"
    assert _with_article("IT trainer") == "an IT trainer"
    assert _with_article("TEFL teacher") == "a TEFL teacher"


def test_importing_the_module_does_not_import_faker():
    code = "import sys, prunelora.data.authors; assert 'faker' not in sys.modules, 'faker imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
