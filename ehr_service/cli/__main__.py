from ehr_service.cli.main import main

main()
