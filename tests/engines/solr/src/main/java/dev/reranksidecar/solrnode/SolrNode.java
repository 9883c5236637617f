package dev.reranksidecar.solrnode;

import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.solr.embedded.JettyConfig;
import org.apache.solr.embedded.JettySolrRunner;

/**
 * Runs one standalone Solr node (Solr's embedded Jetty runner, listening on 127.0.0.1 only)
 * until the JVM is stopped.
 *
 * <p>Usage: {@code SolrNode SOLR_HOME PORT [PID_FILE]}; the node serves {@code /solr}.
 */
public final class SolrNode {
  private SolrNode() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 2) {
      System.err.println("usage: SolrNode SOLR_HOME PORT [PID_FILE]");
      System.exit(2);
    }
    JettyConfig config =
        JettyConfig.builder().setPort(Integer.parseInt(args[1])).setContext("/solr").stopAtShutdown(true).build();
    if (args.length > 2) { // first, so that a node that hangs while starting can still be stopped
      Files.writeString(Path.of(args[2]), Long.toString(ProcessHandle.current().pid()));
    }
    JettySolrRunner runner = new JettySolrRunner(args[0], config);
    runner.start();
    System.out.println("Solr node serving " + runner.getBaseUrl());
    Thread.currentThread().join();
  }
}
