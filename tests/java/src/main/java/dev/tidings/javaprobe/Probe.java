package dev.tidings.javaprobe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * What a Java producer of Tidings events does, with nothing of Tidings' own code.
 *
 * <pre>
 *   fingerprints SCHEMAS_DIR        JSON: every versioned .avsc -> the 8 fingerprint bytes Avro writes
 *   partitions N                    keys on stdin, JSON: key -> Kafka's default partition of N
 *   produce BOOTSTRAP SCHEMAS_DIR   jobs on stdin (JSON lines), each encoded and produced
 * </pre>
 *
 * Schemas load as a Java service would load Tidings' files: the shared named types of
 * schemas/common first, then each event schema against them.
 */
public final class Probe {
  private static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] args) throws Exception {
    switch (args.length == 0 ? "" : args[0]) {
      case "fingerprints" -> fingerprints(Path.of(args[1]));
      case "partitions" -> partitions(Integer.parseInt(args[1]));
      case "produce" -> produce(args[1], Path.of(args[2]));
      default -> {
        System.err.println("usage: Probe fingerprints DIR | partitions N | produce BOOTSTRAP DIR");
        System.exit(2);
      }
    }
  }

  private static List<Schema> commonTypes(Path root) throws IOException {
    Schema.Parser parser = new Schema.Parser();
    List<Schema> types = new ArrayList<>();
    try (Stream<Path> files = Files.list(root.resolve("common"))) {
      for (Path p : files.filter(f -> f.toString().endsWith(".avsc")).sorted().toList()) {
        types.add(parser.parse(p.toFile()));
      }
    }
    return types;
  }

  private static Schema load(Path file, List<Schema> common) throws IOException {
    Schema.Parser parser = new Schema.Parser();
    parser.addTypes(common);
    return parser.parse(file.toFile());
  }

  private static String hex(byte[] bytes) {
    StringBuilder out = new StringBuilder();
    for (byte b : bytes) {
      out.append(String.format("%02x", b));
    }
    return out.toString();
  }

  private static void fingerprints(Path root) throws IOException {
    List<Schema> common = commonTypes(root);
    Map<String, String> out = new TreeMap<>();
    List<Path> files;
    try (Stream<Path> walk = Files.walk(root)) {
      files = walk.filter(f -> f.getFileName().toString().matches(".*\\.v\\d+\\.avsc")).sorted().toList();
    }
    for (Path file : files) {
      long fp = SchemaNormalization.parsingFingerprint64(load(file, common));
      // The single-object header carries the fingerprint little-endian (Avro specification).
      byte[] le = ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(fp).array();
      out.put(root.relativize(file).toString().replace('\\', '/'), hex(le));
    }
    System.out.println(JSON.writerWithDefaultPrettyPrinter().writeValueAsString(out));
  }

  private static void partitions(int n) throws IOException {
    Map<String, Integer> out = new TreeMap<>();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String key = in.readLine(); key != null; key = in.readLine()) {
      if (!key.isEmpty()) {
        out.put(key, BuiltInPartitioner.partitionForKey(key.getBytes(StandardCharsets.UTF_8), n));
      }
    }
    System.out.println(JSON.writerWithDefaultPrettyPrinter().writeValueAsString(out));
  }

  /**
   * Each stdin line: {"topic", "schema" (path under SCHEMAS_DIR of the version to write), "key",
   * "record" (the record in Avro's JSON encoding, as a string)}. Prints one JSON line per record:
   * topic, key, partition, offset.
   */
  private static void produce(String bootstrap, Path root) throws Exception {
    List<Schema> common = commonTypes(root);
    Properties config = new Properties();
    config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    config.put(ProducerConfig.ACKS_CONFIG, "all");
    config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    // No partitioner is configured on purpose: Kafka's default (murmur2 of the key) is the contract.
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(config)) {
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        if (line.isBlank()) {
          continue;
        }
        JsonNode job = JSON.readTree(line);
        Schema schema = load(root.resolve(job.get("schema").asText()), common);
        GenericRecord record = new GenericDatumReader<GenericRecord>(schema)
            .read(null, DecoderFactory.get().jsonDecoder(schema, job.get("record").asText()));
        ByteBuffer encoded = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(record);
        byte[] value = new byte[encoded.remaining()];
        encoded.get(value);
        String key = job.get("key").asText();
        RecordMetadata meta = producer.send(new ProducerRecord<>(job.get("topic").asText(), key, value)).get();
        ObjectNode done = JSON.createObjectNode();
        done.put("topic", meta.topic()).put("key", key).put("partition", meta.partition()).put("offset", meta.offset());
        System.out.println(JSON.writeValueAsString(done));
      }
    }
  }
}
