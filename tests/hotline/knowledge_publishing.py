"""Publishing a water-supply article in one step, as the knowledge search tests need many
(test_knowledge_rank.py, test_knowledge_search_relevance.py, test_knowledge_search_scale.py)."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from core.clock import Clock
from hotline.knowledge import service
from hotline.knowledge.models import KnowledgeArticle, KnowledgeArticleCreate
from tests.factories import World


def publisher(session: Session, world: World, clock: Clock) -> Callable[..., KnowledgeArticle]:
    """publish(title, body): created, submitted and approved by the world's supervisor, for
    the water company (category 020301)."""
    supervisor = world.staff["supervisor"]
    water = world.units["WATER"].id
    assert water is not None

    def publish(title: str, body: str) -> KnowledgeArticle:
        data = KnowledgeArticleCreate(
            title=title,
            body=body,
            category_code="020301",
            owner_unit_id=water,
        )
        article = service.create_article(session, user=supervisor, data=data, now=clock.now())
        assert article.id is not None
        service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
        service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
        return article

    return publish
