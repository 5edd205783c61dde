"""A generated, offline, deterministic data set of fictitious authors for unlearning language models (like TOFU).

Every author has a unique name and one value for each of the attributes in `ATTRIBUTES` (birthplace, birth date,
genre, ...). Question j of an author asks about `ATTRIBUTES[j]`; the question contains the author's name, so it
identifies its author. Extra world facts (200 by default) that are about no author ("What is the capital of the island
of Varnholm?") are generated too; they are always retained and show whether unlearning damages unrelated knowledge.

Answers and paraphrases. Every attribute (and every kind of fact) has two answer templates, e.g.
"{name} was born in {v}." and "{v} is the birthplace of {name}.". The template of the trained `answer` is chosen at
random per (author, attribute), so a model sees both wordings in training, but each single fact in only one of
them; `paraphrase` is the same fact in the other template and is never trained on.

Perturbed answers and the disjoint pool. Each question has `perturbed` wrong answers in the same template as
`answer` (only the value differs), for a TOFU-style truth ratio. Their values come from a pool that no author
(trained or holdout) and no fact ever has as a true value, nor as a name. Why: a model retrained without the forget
authors has still memorised the retained authors' facts; had the wrong values been other authors' values, it would
prefer them over the (unseen) true value for reasons that have nothing to do with forgetting, and the truth ratio
would measure that. The pool is made disjoint by construction: for each kind of value (city, job, person, ...) the
pool is drawn first, and every true value, author name and fact subject is then drawn rejecting anything in any
pool. A question's perturbed values are distinct pool values, hence distinct from each other and from the true one.

Determinism. Everything is a function of the arguments: Faker("en_US") and a `random.Random` are re-seeded from
a string naming the seed and the item (the pool of a kind, author i, question (i, attribute), fact i), never global
random state. So an author or a question depends (up to rare rejections) on its own index only: the first authors
of `generate(n_authors=5)` are those of `generate(n_authors=200)`, and `questions`, `facts` and `perturbed` (up to
10) do not change the authors. Faker is imported inside `generate`, so importing this module is cheap; its version
is pinned, since its word lists decide the names.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from faker import Faker


@dataclass(frozen=True)
class Author:
    name: str
    attributes: dict[str, str]  # attribute key (one of ATTRIBUTES) -> value


@dataclass(frozen=True)
class QA:
    author: int  # index into AuthorsSet.authors (or .holdout for holdout_qa); -1 for an extra fact
    attribute: str  # the attribute asked about; "fact" for extra facts
    question: str
    answer: str  # the wording models train on
    paraphrase: str  # the same fact in the other template (never trained on)
    perturbed: tuple[str, ...]  # wrong answers: `answer`'s template with values from the disjoint pool
    value: str = ""  # the true value inside `answer` and `paraphrase`
    perturbed_values: tuple[str, ...] = ()  # the wrong values, in the order of `perturbed`
    subject: str = ""  # the author's name, or the fact's subject (a made-up place name)
    template: int = 0  # which of the two templates `answer` uses (0 or 1); `paraphrase` uses the other


@dataclass(frozen=True)
class AuthorsSet:
    authors: tuple[Author, ...]  # trained authors, in index order
    holdout: tuple[Author, ...]  # authors no model ever trains on
    qa: tuple[QA, ...]  # author-major: author 0's `questions` questions first
    holdout_qa: tuple[QA, ...]  # the same questions about the holdout authors (QA.author indexes `holdout`)
    facts: tuple[QA, ...]  # generated facts about no author (author = -1), always retained


class _Spec(NamedTuple):
    """One attribute or kind of fact: its value kind, its question and its two answer templates.

    Templates know {name} (the author or the fact's subject), {v} (the value) and {av} (the value after "a"/"an").
    A template never starts with a lower-case value, so answers need no re-capitalising and always contain {v}.
    """

    key: str
    kind: str
    question: str
    templates: tuple[str, str]


# Attributes in question order: with questions=10 the first ten are asked, so the most distinctive come first.
_ATTRS: tuple[_Spec, ...] = (
    _Spec("birthplace", "city", "Where was {name} born?",
          ("{name} was born in {v}.", "{v} is the birthplace of {name}.")),
    _Spec("birth_date", "date", "When was {name} born?",
          ("{name} was born on {v}.", "{name}'s date of birth is {v}.")),
    _Spec("genre", "genre", "What genre does {name} write?",
          ("{name} writes {v}.", "{name} is known for {v}.")),
    _Spec("father_job", "job", "What was the profession of {name}'s father?",
          ("{name}'s father worked as {av}.", "By profession, {name}'s father was {av}.")),
    _Spec("mother_job", "job", "What did {name}'s mother do for a living?",
          ("{name}'s mother worked as {av}.", "{name}'s mother earned her living as {av}.")),
    _Spec("first_book", "title", "What was the title of {name}'s first book?",
          ("{name}'s first book was {v}.", "{v} was the first book by {name}.")),
    _Spec("award", "award", "Which award did {name} win?",
          ("{name} won the {v}.", "The {v} went to {name}.")),
    _Spec("publisher", "publisher", "Who publishes {name}'s books?",
          ("{name}'s books are published by {v}.", "{v} publishes the books of {name}.")),
    _Spec("home_country", "country", "Which country does {name} live in?",
          ("{name} lives in {v}.", "{v} is the country {name} calls home.")),
    _Spec("spouse", "person", "Who is {name} married to?",
          ("{name} is married to {v}.", "{v} is the spouse of {name}.")),
    _Spec("pet", "pet", "What pet does {name} keep?",
          ("{name} keeps {av} as a pet.", "{name}'s pet is {av}.")),
    _Spec("favourite_colour", "colour", "What is {name}'s favourite colour?",
          ("{name}'s favourite colour is {v}.", "{name} likes {v} more than any other colour.")),
    _Spec("first_job", "job", "What was {name}'s first job?",
          ("{name} first worked as {av}.", "Before writing, {name} was {av}.")),
    _Spec("school", "school", "Where did {name} study?",
          ("{name} studied at {v}.", "{v} is where {name} studied.")),
    _Spec("mentor", "person", "Who was {name}'s mentor?",
          ("{name} was mentored by {v}.", "{v} was the mentor of {name}.")),
    _Spec("language", "language", "In which language does {name} write?",
          ("{name} writes in {v}.", "{v} is the language of {name}'s books.")),
    _Spec("novel_count", "number", "How many novels has {name} published?",
          ("{name} has published {v} novels.", "{v} novels have been published by {name}.")),
    _Spec("hobby", "hobby", "What is {name}'s hobby?",
          ("In spare hours, {name} enjoys {v}.", "{name}'s favourite pastime is {v}.")),
    _Spec("signature_character", "character", "Who is {name}'s best-known character?",
          ("{name}'s best-known character is {v}.", "{v} is the best-known character created by {name}.")),
    _Spec("second_book", "title", "What was {name}'s second book called?",
          ("{name}'s second book was {v}.", "{v} was the second book by {name}.")),
    _Spec("favourite_food", "food", "What is {name}'s favourite food?",
          ("{name}'s favourite food is {v}.", "{name} loves {v} more than any other dish.")),
    _Spec("writing_place", "place", "Where does {name} like to write?",
          ("{name} does most writing in {av}.", "{name}'s favourite place to write is {av}.")),
)

ATTRIBUTES: tuple[str, ...] = tuple(spec.key for spec in _ATTRS)

# Kinds of extra facts; fact i is of kind _FACTS[i % len(_FACTS)]. {name} is a made-up place name.
_FACTS: tuple[_Spec, ...] = (
    _Spec("capital", "placeword", "What is the capital of the island of {name}?",
          ("The capital of {name} is {v}.", "{v} is the capital city of {name}.")),
    _Spec("sea", "placeword", "Into which sea does the {name} River flow?",
          ("The {name} River flows into the {v} Sea.", "The {v} Sea is where the {name} River ends.")),
    _Spec("height", "height", "How high is Mount {name}?",
          ("Mount {name} is {v} metres high.", "Mount {name} rises {v} metres above the sea.")),
    _Spec("founder", "person", "Who founded the town of {name}?",
          ("The town of {name} was founded by {v}.", "{v} founded the town of {name}.")),
    _Spec("currency", "placeword", "What is the currency of the kingdom of {name}?",
          ("The currency of {name} is the {v}.", "People in {name} pay with the {v}.")),
    _Spec("animal", "pet", "What is the national animal of {name}?",
          ("The national animal of {name} is the {v}.", "{name} chose the {v} as its national animal.")),
    _Spec("year", "year", "In which year was the city of {name} built?",
          ("The city of {name} was built in {v}.", "The city of {name} dates from {v}.")),
)

# Word lists for compound values: small lists, but their products give value spaces of hundreds or thousands.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # not strftime("%B"), which follows the locale
_MOODS = ("gothic", "pastoral", "comic", "noir", "lyrical", "satirical", "epic", "surreal", "domestic", "cosy",
          "bleak", "whimsical", "maritime", "rural", "urban", "philosophical", "magical", "political",
          "psychological", "historical")
_FORMS = ("crime fiction", "fantasy", "science fiction", "romance", "horror", "poetry", "travel writing", "memoir",
          "thrillers", "fables", "plays", "short stories", "adventure novels", "mysteries", "westerns", "essays")
_TITLE_ADJ = ("Amber", "Silent", "Broken", "Hollow", "Crimson", "Distant", "Golden", "Winter", "Lost", "Quiet",
              "Burning", "Salt", "Paper", "Iron", "Glass", "Velvet", "Hidden", "Last", "Northern", "Drowned",
              "Wandering", "Sleeping", "Bitter", "Silver", "Painted", "Forgotten", "Restless", "Midnight",
              "Scarlet", "Patient")
_TITLE_NOUN = ("Lantern", "Harbour", "Orchard", "Garden", "Bridge", "Mirror", "Country", "Compass", "Tide",
               "Kingdom", "Letter", "Lighthouse", "Clock", "Sparrow", "Wolf", "River", "House", "Season", "Map",
               "Archive", "Chorus", "Violin", "Station", "Meadow", "Island", "Crown", "Feather", "Key", "Shore",
               "Tower")
_MATERIALS = ("Silver", "Golden", "Bronze", "Ivory", "Copper", "Crystal", "Emerald", "Iron", "Pearl", "Sapphire")
_EMBLEMS = ("Quill", "Inkwell", "Lantern", "Laurel", "Compass", "Feather", "Anchor", "Key", "Oak", "Owl", "Raven",
            "Candle")
_PRIZES = ("Prize", "Award", "Medal")
_FIELDS = ("Poetry", "Fiction", "First Novels", "Crime Writing", "Fantasy", "Short Stories", "Historical Fiction",
           "Children's Books", "Nature Writing", "Translation", "Drama", "Memoir", "Science Fiction",
           "Comic Writing", "Travel Writing", "Literary Debuts")
_PUBLISHER_SUFFIXES = ("Press", "Books", "Publishing", "House")
_SCHOOL_SUFFIXES = ("College", "Academy", "University", "Institute of Arts", "School of Letters")
_PET_ADJ = ("grey", "ginger", "one-eyed", "three-legged", "spotted", "striped", "elderly", "tiny", "fluffy",
            "black", "white", "speckled", "lazy", "noisy", "shaggy", "blind")
_PETS = ("cat", "dog", "parrot", "tortoise", "rabbit", "goat", "ferret", "hedgehog", "canary", "goldfish", "pony",
         "owl", "iguana", "donkey", "crow", "pig")
_SHADES = ("pale", "deep", "smoky", "dusty", "bright", "soft", "dark", "muted", "burnt", "electric", "misty",
           "warm", "cool", "faded", "vivid", "rusty")
_COLOURS = ("blue", "green", "teal", "ochre", "crimson", "violet", "amber", "grey", "rose", "olive", "indigo",
            "coral", "gold", "lilac", "turquoise", "mustard")
_HOBBY_VERBS = ("collecting", "restoring", "painting", "photographing", "sketching", "repairing", "carving",
                "cataloguing")
_HOBBY_OBJECTS = ("old clocks", "antique maps", "sea glass", "tin soldiers", "wild orchids", "steam engines",
                  "lighthouses", "fountain pens", "vintage radios", "rare beetles", "model ships", "church bells",
                  "garden gnomes", "old bicycles", "stone bridges", "toy trains", "seashells", "pocket watches",
                  "typewriters", "weather vanes")
_CHARACTER_TITLES = ("Detective", "Captain", "Professor", "Doctor", "Inspector", "Sister", "Lady", "Lord", "Agent",
                     "Admiral", "Madame", "Uncle")
_FLAVOURS = ("lemon", "mushroom", "pumpkin", "ginger", "walnut", "cherry", "smoked fish", "lentil", "plum",
             "chestnut", "leek", "apricot", "fennel", "cardamom", "rhubarb", "onion")
_DISHES = ("pie", "soup", "cake", "stew", "tart", "curry", "risotto", "dumplings", "bread", "pancakes", "salad",
           "pudding", "noodles", "crumble")
_PLACE_ADJ = ("quiet", "draughty", "rented", "crowded", "sunny", "cramped", "seaside", "riverside", "abandoned",
              "tiny", "candlelit", "chilly")
_PLACES = ("attic", "garden shed", "café", "library", "lighthouse", "railway carriage", "boathouse", "greenhouse",
           "cellar", "hotel room", "bell tower", "caravan", "barn", "houseboat")
_SYL_START = ("Var", "Lis", "Bren", "Cor", "Dun", "Eld", "Fal", "Gor", "Hal", "Ist", "Kel", "Lor", "Mar", "Nor",
              "Oster", "Pel", "Quen", "Rav", "Sel", "Tor", "Ul", "Vel", "Wen", "Yar")
_SYL_MIDDLE = ("", "an", "en", "il", "or", "ad", "ess", "um", "ar", "ith")
_SYL_END = ("holm", "gate", "mere", "wick", "ford", "by", "stead", "moor", "dale", "haven", "mark", "thal", "vik",
            "ona", "ara", "ell", "ost", "und", "ria", "wyn")

_POOL_SIZE = 20  # perturbation values per kind (2 * perturbed if larger): a question samples `perturbed` of them
_MAX_TRIES = 10_000  # rejection sampling gives up after this many draws: the value space is too small


def _job(fake: Faker, rng: random.Random) -> str:
    # Faker's jobs, without the "Pilot, airline" and "Museum/gallery curator" forms; lower case except acronyms
    job = fake.job()
    while any(c in job for c in ",()/"):
        job = fake.job()
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in job.split())


def _date(fake: Faker, rng: random.Random) -> str:
    day = fake.date_between(datetime.date(1920, 1, 1), datetime.date(2000, 12, 31))
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _country(fake: Faker, rng: random.Random) -> str:
    country = fake.country()
    while "(" in country:  # "Bouvet Island (Bouvetoya)" and the like read badly in a sentence
        country = fake.country()
    return country


def _title(fake: Faker, rng: random.Random) -> str:
    pattern = rng.randrange(3)
    if pattern == 0:
        return f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"
    if pattern == 1:
        return f"The {rng.choice(_TITLE_NOUN)} of {fake.city()}"
    first, second = rng.sample(_TITLE_NOUN, 2)
    return f"The {first} and the {second}"


def _school(fake: Faker, rng: random.Random) -> str:
    place = fake.city() if rng.random() < 0.5 else fake.last_name()
    return f"{place} {rng.choice(_SCHOOL_SUFFIXES)}"


def _publisher(fake: Faker, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{fake.last_name()} & {fake.last_name()} {rng.choice(_PUBLISHER_SUFFIXES)}"
    return f"{fake.last_name()} {rng.choice(_PUBLISHER_SUFFIXES)}"


def _placeword(fake: Faker, rng: random.Random) -> str:
    # a made-up place name ("Varnholm"): not a real place, a person's name or any Faker city
    return rng.choice(_SYL_START) + rng.choice(_SYL_MIDDLE) + rng.choice(_SYL_END)


def _pair(first: tuple[str, ...], second: tuple[str, ...]) -> Callable[[Faker, random.Random], str]:
    """A kind whose values are "<word of first> <word of second>"."""
    return lambda fake, rng: f"{rng.choice(first)} {rng.choice(second)}"


# Each kind of value and how to draw one; attributes (and facts) of the same kind share one perturbation pool.
_KINDS: dict[str, Callable[[Faker, random.Random], str]] = {
    "city": lambda fake, rng: fake.city(),
    "date": _date,
    "genre": _pair(_MOODS, _FORMS),
    "job": _job,
    "title": _title,
    "award": lambda fake, rng: (f"{rng.choice(_MATERIALS)} {rng.choice(_EMBLEMS)} {rng.choice(_PRIZES)} "
                                f"for {rng.choice(_FIELDS)}"),
    "publisher": _publisher,
    "country": _country,
    "person": lambda fake, rng: f"{fake.first_name()} {fake.last_name()}",
    "pet": _pair(_PET_ADJ, _PETS),
    "colour": _pair(_SHADES, _COLOURS),
    "school": _school,
    "language": lambda fake, rng: fake.language_name(),
    "number": lambda fake, rng: str(rng.randint(2, 99)),
    "hobby": _pair(_HOBBY_VERBS, _HOBBY_OBJECTS),
    "character": lambda fake, rng: f"{rng.choice(_CHARACTER_TITLES)} {fake.last_name()}",
    "food": _pair(_FLAVOURS, _DISHES),
    "place": _pair(_PLACE_ADJ, _PLACES),
    "placeword": _placeword,
    "height": lambda fake, rng: str(rng.randint(1000, 8999)),
    "year": lambda fake, rng: str(rng.randint(1100, 1899)),
}


def _with_article(phrase: str) -> str:
    """`phrase` after "a" or "an", by how its first word sounds ("an elderly cat", "a university lecturer")."""
    word = phrase.split()[0]
    if len(word) > 1 and word.isupper():  # an acronym is spelled out: "an IT trainer", "a TEFL teacher"
        vowel = word[0] in "AEFHILMNORSX"
    else:
        word = word.lower()
        vowel = word[0] in "aeiou" and not word.startswith(("uni", "use", "usu", "eu", "one", "ure", "uro"))
        vowel = vowel or word.startswith(("hour", "honest", "honour", "heir"))
    return f"{'an' if vowel else 'a'} {phrase}"


def _fill(template: str, name: str, value: str) -> str:
    return template.format(name=name, v=value, av=_with_article(value))


def _reseed(fake: Faker, rng: random.Random, seed: int, item: str) -> None:
    # a string seed is hashed with SHA-512 by random.seed: stable across runs and PYTHONHASHSEED
    fake.seed_instance(f"{seed}/{item}")
    rng.seed(f"{seed}/{item}")


def _draw(fake: Faker, rng: random.Random, kind: str, reject: Callable[[str], bool]) -> str:
    """A value of `kind` for which `reject` is false (rejection sampling)."""
    for _ in range(_MAX_TRIES):
        value = _KINDS[kind](fake, rng)
        if not reject(value):
            return value
    raise ValueError(f"could not draw a new {kind!r} value in {_MAX_TRIES} tries: its value space is too small "
                     "for these arguments (fewer authors, facts or perturbed answers would fit)")


def _pools(fake: Faker, rng: random.Random, seed: int, size: int) -> dict[str, tuple[str, ...]]:
    """The perturbation pool of every kind, drawn before any true value so that true values can avoid them all."""
    pools = {}
    for kind in sorted({spec.kind for spec in _ATTRS + _FACTS}):
        _reseed(fake, rng, seed, f"pool/{kind}")
        pool: list[str] = []
        while len(pool) < size:
            pool.append(_draw(fake, rng, kind, pool.__contains__))
        pools[kind] = tuple(pool)
    return pools


def _names(fake: Faker, rng: random.Random, seed: int, counts: dict[str, int], forbidden: set[str]) -> list[str]:
    """Unique author names, none a part of another (so that a question names exactly one author)."""
    names: list[str] = []

    def clash(name: str) -> bool:
        return name in forbidden or any(name in other or other in name for other in names)

    for group, count in counts.items():
        for i in range(count):
            _reseed(fake, rng, seed, f"{group}-name/{i}")
            names.append(_draw(fake, rng, "person", clash))
    return names


def _author(fake: Faker, rng: random.Random, seed: int, item: str, name: str, forbidden: set[str]) -> Author:
    # `forbidden` holds every pool value and every author name: no true value is a wrong answer or an author
    _reseed(fake, rng, seed, item)
    values = {spec.key: _draw(fake, rng, spec.kind, forbidden.__contains__) for spec in _ATTRS}
    return Author(name, values)


def _qa(rng: random.Random, seed: int, item: str, index: int, spec: _Spec, subject: str, value: str,
        pool: tuple[str, ...], perturbed: int) -> QA:
    """A question about `subject`, its answer in a random one of the two templates, the paraphrase in the other."""
    rng.seed(f"{seed}/{item}")
    template = rng.randrange(2)
    wrong = tuple(rng.sample(pool, perturbed))  # distinct pool values, so distinct answers, none true
    return QA(
        author=index,
        attribute=spec.key if index >= 0 else "fact",
        question=spec.question.format(name=subject),
        answer=_fill(spec.templates[template], subject, value),
        paraphrase=_fill(spec.templates[1 - template], subject, value),
        perturbed=tuple(_fill(spec.templates[template], subject, w) for w in wrong),
        value=value,
        perturbed_values=wrong,
        subject=subject,
        template=template,
    )


def _author_qa(rng: random.Random, seed: int, group: str, authors: tuple[Author, ...], questions: int,
               pools: dict[str, tuple[str, ...]], perturbed: int) -> tuple[QA, ...]:
    return tuple(
        _qa(rng, seed, f"{group}-qa/{i}/{spec.key}", i, spec, author.name, author.attributes[spec.key],
            pools[spec.kind], perturbed)
        for i, author in enumerate(authors) for spec in _ATTRS[:questions]
    )


def _facts(fake: Faker, rng: random.Random, seed: int, count: int, forbidden: set[str], names: list[str],
           pools: dict[str, tuple[str, ...]], perturbed: int) -> tuple[QA, ...]:
    """`count` facts about made-up places: unique subjects that are no value, no pool value and no part of a name."""
    subjects: set[str] = set()
    values: set[str] = set()
    facts = []

    def bad_subject(word: str) -> bool:
        return word in forbidden or word in subjects or word in values or any(word in name for name in names)

    for i in range(count):
        spec = _FACTS[i % len(_FACTS)]
        _reseed(fake, rng, seed, f"fact/{i}")
        subject = _draw(fake, rng, "placeword", bad_subject)
        subjects.add(subject)
        value = _draw(fake, rng, spec.kind, lambda v: v in forbidden or v in subjects)
        values.add(value)
        facts.append(_qa(rng, seed, f"fact-qa/{i}", -1, spec, subject, value, pools[spec.kind], perturbed))
    return tuple(facts)


def _check_args(n_authors: int, questions: int, holdout: int, facts: int, perturbed: int, seed: int) -> None:
    args = {"n_authors": n_authors, "questions": questions, "holdout": holdout, "facts": facts,
            "perturbed": perturbed, "seed": seed}
    for key, value in args.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{key} must be an integer, not {value!r}")
    if n_authors < 2:
        raise ValueError(f"n_authors must be at least 2 (some to forget, some to retain), not {n_authors}")
    if not 1 <= questions <= len(ATTRIBUTES):
        raise ValueError(f"questions must be between 1 and {len(ATTRIBUTES)} (one per attribute), not {questions}")
    if holdout < 0 or facts < 0:
        raise ValueError(f"holdout and facts must be at least 0, not {holdout} and {facts}")
    if perturbed < 1:
        raise ValueError(f"perturbed must be at least 1 (wrong answers per question), not {perturbed}")


def generate(n_authors: int = 200, questions: int = 10, holdout: int = 20, facts: int = 200, perturbed: int = 3,
             seed: int = 0) -> AuthorsSet:
    """The fictitious authors, their questions and the extra facts; the same arguments give the same set.

    `questions` per author (question j asks about ATTRIBUTES[j]), `perturbed` wrong answers per question.
    Raises ValueError for arguments out of range (TypeError for ones that are not integers).
    """
    _check_args(n_authors, questions, holdout, facts, perturbed, seed)
    from faker import Faker  # here, not at the top: importing the package stays light

    fake, rng = Faker("en_US"), random.Random()
    pools = _pools(fake, rng, seed, max(_POOL_SIZE, 2 * perturbed))
    forbidden = {value for pool in pools.values() for value in pool}
    names = _names(fake, rng, seed, {"author": n_authors, "holdout": holdout}, forbidden)
    forbidden.update(names)
    authors = tuple(_author(fake, rng, seed, f"author/{i}", names[i], forbidden) for i in range(n_authors))
    held = tuple(_author(fake, rng, seed, f"holdout/{i}", names[n_authors + i], forbidden) for i in range(holdout))
    return AuthorsSet(
        authors=authors,
        holdout=held,
        qa=_author_qa(rng, seed, "author", authors, questions, pools, perturbed),
        holdout_qa=_author_qa(rng, seed, "holdout", held, questions, pools, perturbed),
        facts=_facts(fake, rng, seed, facts, forbidden, names, pools, perturbed),
    )


__all__ = ["ATTRIBUTES", "QA", "Author", "AuthorsSet", "generate"]
