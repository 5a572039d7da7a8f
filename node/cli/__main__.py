from credex.node.cli.main import main

main()
