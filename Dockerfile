# Image for the agents CLI and worker (see docker-compose.yml).
# TypeScript runs through tsx, a runtime dependency, so there is no build step and no dev dependencies.
FROM node:20-bookworm-slim

# bubblewrap isolates tool calls on the sandbox server; tmux backs its terminal tools.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap tmux \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

COPY . .

# AGENTS_HOME holds logs, user templates and generated tokens; it must be writable by the node user.
ENV NODE_ENV=production \
    AGENTS_HOME=/data
RUN mkdir -p /data && chown node:node /data

USER node

ENTRYPOINT ["bin/agents"]
CMD ["worker"]
