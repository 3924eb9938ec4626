"""Baseline for bench/api_list_clusters.py: a bare FastAPI endpoint doing one SELECT."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.db import async_url

engine = create_async_engine(
    async_url(os.environ["CLUSTERPORT_DATABASE_URL"]), pool_size=20, max_overflow=20
)
app = FastAPI()


@app.get("/clusters/{project_id}")
async def clusters(project_id: int) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT * FROM clusters WHERE project_id = :p ORDER BY id LIMIT 51"),
            {"p": project_id},
        )
        return [dict(row._mapping) for row in rows]
