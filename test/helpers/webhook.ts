import { once } from 'node:events';
import { createServer, type Server } from 'node:http';

/** A notice as a chat webhook receives it: the text a person reads, and its kind. */
export interface WebhookBody {
  text: string;
  kind: string;
}

/** A chat webhook on 127.0.0.1 that takes every POST and keeps its JSON body. */
export async function startWebhook(): Promise<{
  url: string;
  bodies: WebhookBody[];
  close(): Promise<void>;
}> {
  const bodies: WebhookBody[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    request.on('end', () => {
      bodies.push(JSON.parse(body) as WebhookBody);
      response.writeHead(200).end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the webhook has no port');
  return {
    url: `http://127.0.0.1:${address.port}/hooks/chat`,
    bodies,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
